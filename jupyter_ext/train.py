"""Train panel: model, a form generated from the registry, Start / Stop, live losses, then the test."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ad_core.models import get_spec, list_models
from ad_core.models.spec import Param
from ad_core.rundir import RunDir
from jupyter_ext._common import (
    STYLE,
    Job,
    ParamField,
    Startable,
    Status,
    defects_selector,
    device_selector,
    file_link,
    param_widget,
    png_bytes,
    read_param,
    show_png,
    write_param,
)

EPOCHS = Param("epochs", int, None, "maximum epochs for trained models (EfficientAD, VAE); empty: the model's", low=1,
               high=100000)  # fmt: skip
SEED = Param("seed", int, 0, "random seed of the split, the sampling and the training", low=0, high=2**31 - 1)


class TrainPanel(Startable, w.VBox):
    """Train a model on the chosen category, show its losses live, test it and report AUROC / F1 / threshold."""

    def __init__(
        self,
        data_root: str | Path = "data",
        category: str = "",
        models_root: str | Path = "models",
        model: str = "patchcore",
    ) -> None:
        self.data_root, self.category_name, self.models_root = str(data_root), category, str(models_root)
        self.model = w.Dropdown(options=list_models(), value=model, description="model", style=STYLE)
        self.choose = w.Button(description="Choose for me", icon="magic", layout=w.Layout(width="auto"))
        self.choose.tooltip = (
            "fit each model on most of the normal images and score it on the rest plus synthetic defects made from "
            "them (no labelled defects needed); the best fills this form (ad-core select)"
        )
        self.wide = w.Checkbox(value=False, description="wider search", indent=False, layout=w.Layout(width="auto"))
        self.wide.tooltip = "also try other layers, backbones and searches: about six fits per model instead of one"
        self.defects = defects_selector()
        self.selection: Any = None
        self.description = w.HTML()
        self.form = w.VBox()
        self.fields: dict[str, tuple[Any, w.Widget]] = {}
        self.epochs = ParamField(EPOCHS)
        self.seed = ParamField(SEED)
        self.test_after = w.Checkbox(value=True, description="test after training", indent=False)
        self.device = device_selector()
        self.start = w.Button(description="Start", button_style="primary", icon="play")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="260px"))
        self.stage = w.HTML("idle")
        self.plot = w.Image(format="png", layout=w.Layout(max_width="560px", display="none"))
        self.status = Status()
        self.results = w.HTML()
        self.job: Job | None = None
        self.run_dir: Path | None = None
        self.target_run: Path | None = None
        self.report: dict | None = None
        self.history: list[dict] = []
        self._listeners: list[Callable[[Path, dict | None], None]] = []
        super().__init__(
            [
                w.HBox([self.model, self.choose, self.wide]),
                self.defects,
                self.description,
                self.form,
                self.epochs,
                self.seed,
                self.test_after,
                self.device,
                w.HBox([self.start, self.stop, self.progress, self.stage]),
                self.status,
                self.plot,
                self.results,
            ]
        )
        self.model.observe(lambda _: self._build_form(), names="value")
        self.start.on_click(lambda _: self.begin())
        self.choose.on_click(lambda _: self.begin_select())
        self.stop.on_click(lambda _: self.job and self.job.stop())
        for field in (self.epochs, self.seed):
            field.input.observe(lambda _: self.clear_results(), names="value")
        self.data_error = ""
        self._build_form()

    # -- wiring ------------------------------------------------------------------------------------
    def set_data(self, data_root: str, category: str, models_root: str | None = None) -> None:
        """Train on this data root and category (the Data panel calls this)."""
        changed = (data_root, category) != (self.data_root, self.category_name)
        self.data_root, self.category_name, self.data_error = data_root, category, ""
        if models_root:
            self.models_root = str(models_root)
        self.start.disabled = self.choose.disabled = False
        if changed:
            self.clear_results()
        self._describe()

    def data_failed(self, message: str) -> None:
        """The Data tab's last choice failed: say so, and train nothing until a valid category is chosen."""
        self.data_error, self.category_name = message, ""
        self.start.disabled = self.choose.disabled = True
        self.clear_results()
        self._describe()

    def clear_results(self) -> None:
        """Results belong to the inputs that produced them: forget them when an input changes."""
        if self.job is not None and self.job.running:
            return
        self.results.value = ""
        show_png(self.plot, None)
        if self.progress.bar_style in ("success", "danger", "warning"):
            self.progress.value, self.progress.bar_style, self.stage.value = 0, "", "idle"

    def on_trained(self, callback: Callable[[Path, dict | None], None]) -> None:
        """Call ``callback(run_dir, test_report)`` after a successful training."""
        self._listeners.append(callback)

    def set_params(
        self, model: str, params: dict[str, Any], train: dict[str, Any] | None = None, run_dir: str | Path | None = None
    ) -> None:
        """Fill the form (the Tune panel's "train with best" calls this).

        ``run_dir``: the tuning's run directory; the next training fills it (seed flow 2 -> 3) as
        long as it holds no trained model yet.
        """
        self.model.value = model
        self.target_run = Path(run_dir) if run_dir is not None else None
        for name, value in params.items():
            if name in self.fields:
                p, widget = self.fields[name]
                write_param(p, widget, value)
        train = train or {}
        self.epochs.write(train.get("epochs"))
        self.seed.write(train.get("seed", 0) or 0)

    def _build_form(self) -> None:
        spec = get_spec(self.model.value)
        self.fields = {p.name: (p, param_widget(p)) for p in spec.all_params()}
        for _, field in self.fields.values():
            field.input.observe(lambda _: self.clear_results(), names="value")
        self.form.children = [field for _, field in self.fields.values()]
        self.epochs.input.disabled = not spec.trained
        self.clear_results()
        self._describe()

    def _describe(self) -> None:
        spec = get_spec(self.model.value)
        if self.data_error:
            self.description.value = (
                f"<i>{html.escape(spec.description)}</i><br><span style='color:#cf222e'>&#10008; the Data tab's choice "
                f"failed ({html.escape(self.data_error)}): choose a valid category there; nothing is trained until then"
                "</span>"
            )
            return
        where = f"{self.category_name or '(choose a category in Data)'} in {self.data_root}"
        self.description.value = f"<i>{html.escape(spec.description)}</i><br>training on <b>{html.escape(where)}</b>"

    def hparams(self) -> dict[str, Any]:
        """The form's hyperparameters, validated by the registry; every bad field is marked, the first raised."""
        from ad_core.errors import ConfigError

        out, first = {}, None
        for name, (p, widget) in self.fields.items():
            try:
                value = read_param(p, widget)
            except ConfigError as exc:
                first = first or exc
                continue
            if value is not None:
                out[name] = value
        for field in (self.epochs, self.seed):
            try:
                field.read()
            except ConfigError as exc:
                first = first or exc
        if first is not None:
            raise ConfigError(f"fix the marked field(s) first: {first}")
        return out

    # -- work --------------------------------------------------------------------------------------
    def _ready(self) -> dict[str, Any] | None:
        """The form's hyperparameters when work may start; otherwise None, with the reason in the status line."""
        if self.job is not None and self.job.running:
            self.status.error(f"a {self.job.kind} is already running: stop it first")
            return None
        try:
            hparams = self.hparams()
            if self.data_error:
                raise ValueError(f"the Data tab's choice failed ({self.data_error}): choose a valid category there")
            if not self.category_name:
                raise ValueError("choose a category in the Data tab first")
        except Exception as exc:
            self.status.error(exc)
            return None
        return hparams

    def begin_select(self) -> Job | None:
        """Choose model and configuration without labelled defects (``ad-core select``) in the background.

        Every candidate gets the form's image size. When it ends, the winner fills the form and Start
        trains it into the selection's run directory, whose ``param/`` says why it was chosen.
        """
        hparams = self._ready()
        if hparams is None:
            return None
        fixed = {k: hparams[k] for k in ("image_size", "resize", "tiles", "tile_overlap") if k in hparams}
        seed, device, wide = self.seed.read() or 0, self.device.value, self.wide.value
        kinds = [self.defects.value] if self.defects.value else None
        self.selection = None
        self._starting(f"choosing a model for {self.category_name} without labelled defects ...")

        def work(stop: threading.Event):
            from ad_core.select import select

            return select(
                self.category_name,
                self.data_root,
                self.models_root,
                wide=wide,
                proxy_kinds=kinds,
                log=None,
                seed=seed,
                device=device,
                progress=False,
                on_progress=self._progress,
                stop=stop,
                **fixed,
            )

        self.job = Job(work, self._selected, self._failed, kind="selection").start()
        return self.job

    def _selected(self, result) -> None:
        self.selection = result
        best = result.best
        self.set_params(best["model"], best["hparams"], {"seed": self.seed.read() or 0}, run_dir=result.run_dir)
        self._busy(False)
        self.progress.value, self.progress.bar_style, self.stage.value = self.progress.max, "success", "chosen"
        show_png(self.plot, result.files["plot"].read_bytes() if result.files["plot"].is_file() else None)
        self.results.value = selection_table(result)
        self.status.ok(
            f"chosen: {best['candidate']} (proxy AUROC {best['auroc']:.3f}); Start trains it into",
            file_link(result.run_dir),
        )

    def begin(self) -> Job | None:
        """Start training (and testing) in the background; returns the job."""
        hparams = self._ready()
        if hparams is None:
            return None
        model = self.model.value
        epochs = self.epochs.read()
        seed = self.seed.read() or 0
        self._starting(f"training {model} on {self.category_name} ...")

        target = self.target_run if self.target_run and not RunDir(self.target_run).trained else None
        device = self.device.value

        def work(stop: threading.Event):
            from ad_core import evaluate, train

            run = train(
                model,
                self.category_name,
                self.data_root,
                self.models_root,
                seed=seed,
                epochs=epochs,
                progress=False,
                on_epoch=self._epoch,
                on_progress=self._progress,
                stop=stop,
                run_dir=target,
                device=device,
                **hparams,
            )
            self.run_dir = run
            report = None
            if self.test_after.value:
                self.status.info("testing ...")
                report = evaluate(run, progress=False, device=device, on_progress=self._progress)
            return run, report

        self.job = Job(work, self._done, self._failed, kind="training").start()
        return self.job

    def _starting(self, message: str) -> None:
        """Forget the last results, reset the bar and lock the controls: work is about to start."""
        self.history, self.report, self.results.value = [], None, ""
        show_png(self.plot, None)
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, "info"
        self.stage.value = "starting"
        self.status.info(message)
        self._busy(True)

    def _busy(self, busy: bool) -> None:
        self.start.disabled, self.stop.disabled, self.model.disabled = busy, not busy, busy
        self.choose.disabled = self.wide.disabled = self.defects.disabled = busy

    def _progress(self, stage: str, done: int, total: int) -> None:
        """A step of a long stage (distillation, an epoch, features, coreset, testing): the bar and its label."""
        with self.progress.hold_sync():
            self.progress.max = max(1, int(total))
            self.progress.value = min(int(done), self.progress.max)
        self.stage.value = html.escape(f"{stage} {done}/{total}")

    def _epoch(self, row: dict) -> None:
        from ad_core.viz import loss_figure

        self.history.append(row)
        self.status.info(f"epoch {row['epoch']}: loss {row['loss']:.4g}, validation {row['val_loss']:.4g}")
        show_png(self.plot, png_bytes(loss_figure(self.history, f"{self.model.value}: training")))

    def _done(self, result) -> None:
        run, report = result
        self.report = report
        self._busy(False)
        self.progress.value, self.progress.bar_style, self.stage.value = self.progress.max, "success", "done"
        if report is not None:
            self.results.value = (
                f"<table><tr><td>image AUROC</td><td><b>{report['image_auroc']:.4f}</b></td></tr>"
                f"<tr><td>best F1</td><td><b>{report['image_f1']:.4f}</b></td></tr>"
                f"<tr><td>automatic threshold (raw)</td><td>{report['image_threshold_auto']:.6g}</td></tr>"
                + (
                    f"<tr><td>pixel AUROC</td><td>{report['pixel_auroc']:.4f}</td></tr>"
                    if report.get("pixel_auroc")
                    else ""
                )
                + "</table>"
            )
        self.status.ok("trained" + (" and tested" if report else "") + ": run directory", file_link(run))
        for listener in self._listeners:
            listener(run, report)

    def _failed(self, exc: BaseException) -> None:
        from ad_core.errors import TrainingStopped

        self._busy(False)
        stopped = isinstance(exc, TrainingStopped)
        self.progress.bar_style = "warning" if stopped else "danger"
        self.stage.value = "stopped" if stopped else "failed"
        self.results.value = ""  # no old result under a new error
        self.status.error(exc)


def selection_table(result) -> str:
    """The candidates a selection fitted, best first, with the reason it gives (``param/selection.yaml``)."""
    import yaml

    why = yaml.safe_load(result.files["why"].read_text())
    rows = "".join(
        f"<tr><td>{html.escape(r['candidate'])}</td><td><b>{r['proxy_auroc']:.3f}</b></td>"
        f"<td>{r['ms_per_image']:.1f}</td></tr>"
        for r in why["ranking"]
    )
    failed = "".join(
        f"<tr><td>{html.escape(r['candidate'])}</td><td colspan=2>failed: {html.escape(str(r.get('error')))}</td></tr>"
        for r in result.rows
        if r.get("auroc") is None
    )
    proxy = why["proxy"]
    return (
        f"<p>{html.escape(why['why'])}.<br><small>proxy: {proxy['held_out_normals']} held-out normal images and "
        f"{proxy['synthetic_anomalies']} synthetic defects ({html.escape(', '.join(proxy['kinds']))}); the test split "
        "was not used. A proxy ranks clearly wrong configurations below good ones, not close ones reliably.</small></p>"
        "<table><tr><th>candidate</th><th>proxy AUROC</th><th>ms / image</th></tr>" + rows + failed + "</table>"
    )
