"""Train panel: model, a form generated from the registry, Start / Stop, live losses, then the test."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from ad_core.models import get_spec, list_models
from ad_core.rundir import RunDir
from jupyter_ext._common import (
    STYLE,
    Job,
    Status,
    device_selector,
    file_link,
    param_widget,
    png_bytes,
    read_param,
    write_param,
)


class TrainPanel(w.VBox):
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
        self.description = w.HTML()
        self.form = w.VBox()
        self.fields: dict[str, tuple[Any, w.Widget]] = {}
        self.epochs = w.BoundedIntText(value=0, min=0, max=100000, description="epochs (0: default)", style=STYLE)
        self.seed = w.BoundedIntText(value=0, min=0, max=2**31 - 1, description="seed", style=STYLE)
        self.test_after = w.Checkbox(value=True, description="test after training")
        self.device = device_selector()
        self.start = w.Button(description="Start", button_style="primary", icon="play")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="idle", style=STYLE)
        self.plot = w.Image(format="png", layout=w.Layout(max_width="560px"))
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
                self.model,
                self.description,
                self.form,
                w.HBox([self.epochs, self.seed, self.test_after]),
                self.device,
                w.HBox([self.start, self.stop, self.progress]),
                self.status,
                self.plot,
                self.results,
            ]
        )
        self.model.observe(lambda _: self._build_form(), names="value")
        self.start.on_click(lambda _: self.begin())
        self.stop.on_click(lambda _: self.job and self.job.stop())
        self._build_form()

    # -- wiring ------------------------------------------------------------------------------------
    def set_data(self, data_root: str, category: str) -> None:
        """Train on this data root and category (the Data panel calls this)."""
        self.data_root, self.category_name = data_root, category
        self._describe()

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
        self.epochs.value = train.get("epochs") or 0
        self.seed.value = train.get("seed", 0) or 0

    def _build_form(self) -> None:
        spec = get_spec(self.model.value)
        self.fields = {p.name: (p, param_widget(p)) for p in spec.all_params()}
        rows = []
        for p, widget in self.fields.values():
            rows.append(w.HBox([widget, w.HTML(f"<small style='color:#57606a'>{p.help}</small>")]))
        self.form.children = rows
        self.epochs.disabled = not spec.trained
        self._describe()

    def _describe(self) -> None:
        spec = get_spec(self.model.value)
        where = f"{self.category_name or '(choose a category in Data)'} in {self.data_root}"
        self.description.value = f"<i>{spec.description}</i><br>training on <b>{where}</b>"

    def hparams(self) -> dict[str, Any]:
        """The form's hyperparameters, validated by the registry."""
        out = {}
        for name, (p, widget) in self.fields.items():
            value = read_param(p, widget)
            if value is not None:
                out[name] = value
        return out

    # -- work --------------------------------------------------------------------------------------
    def begin(self) -> Job | None:
        """Start training (and testing) in the background; returns the job."""
        if self.job is not None and self.job.running:
            self.status.error("a training is already running: stop it first")
            return None
        try:
            hparams = self.hparams()
            if not self.category_name:
                raise ValueError("choose a category in the Data tab first")
        except Exception as exc:
            self.status.error(exc)
            return None
        model, spec = self.model.value, get_spec(self.model.value)
        epochs = self.epochs.value or None
        self.history, self.report, self.results.value, self.plot.value = [], None, "", b""
        self.progress.value, self.progress.max = 0, (epochs or 1) if spec.trained else 1
        self.progress.description = "training"
        self.progress.bar_style = "info"
        self.status.info(f"training {model} on {self.category_name} ...")
        self._busy(True)

        target = self.target_run if self.target_run and not RunDir(self.target_run).trained else None
        device = self.device.value

        def work(stop: threading.Event):
            from ad_core import evaluate, train

            run = train(
                model,
                self.category_name,
                self.data_root,
                self.models_root,
                seed=self.seed.value,
                epochs=epochs,
                progress=False,
                on_epoch=self._epoch,
                stop=stop,
                run_dir=target,
                device=device,
                **hparams,
            )
            self.run_dir = run
            report = None
            if self.test_after.value:
                self.status.info("testing ...")
                report = evaluate(run, progress=False, device=device)
            return run, report

        self.job = Job(work, self._done, self._failed).start()
        return self.job

    def _busy(self, busy: bool) -> None:
        self.start.disabled, self.stop.disabled, self.model.disabled = busy, not busy, busy

    def _epoch(self, row: dict) -> None:
        from ad_core.viz import loss_figure

        self.history.append(row)
        if row["epoch"] > self.progress.max:
            self.progress.max = row["epoch"]
        self.progress.value = row["epoch"]
        self.status.info(f"epoch {row['epoch']}: loss {row['loss']:.4g}, validation {row['val_loss']:.4g}")
        self.plot.value = png_bytes(loss_figure(self.history, f"{self.model.value}: training"))

    def _done(self, result) -> None:
        run, report = result
        self.report = report
        self._busy(False)
        self.progress.value, self.progress.bar_style, self.progress.description = self.progress.max, "success", "done"
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
        self._busy(False)
        self.progress.bar_style, self.progress.description = "danger", "failed"
        self.status.error(exc)
