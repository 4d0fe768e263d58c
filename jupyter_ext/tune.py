"""Tune panel: edit the search space, run an Optuna study, watch trials arrive, train with the best."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import yaml

from ad_core.models import get_spec, list_models
from ad_core.models.spec import Param
from ad_core.rundir import RunDir
from ad_core.tune import METRICS, default_search_space
from jupyter_ext._common import (
    STYLE,
    Job,
    ParamField,
    Startable,
    Status,
    defects_selector,
    device_selector,
    file_link,
    png_bytes,
    show_png,
)
from jupyter_ext.train import EPOCHS

TRIALS = Param("trials", int, 10, "finished trials the study should hold", low=1, high=10000)


def _param(model: str, name: str) -> Param:
    return next(p for p in get_spec(model).all_params() if p.name == name)


def _size_param(model: str) -> Param:
    return _param(model, "image_size")


class TunePanel(Startable, w.VBox):
    """Search-space editor, trials, Start / Stop, a live trial table and optimisation-history plot."""

    def __init__(
        self,
        data_root: str | Path = "data",
        category: str = "",
        models_root: str | Path = "models",
        model: str = "padim",
        image_size: int = 256,
    ) -> None:
        self.data_root, self.category_name, self.models_root = str(data_root), category, str(models_root)
        self.model = w.Dropdown(options=list_models(), value=model, description="model", style=STYLE)
        self.image_size = ParamField(_size_param(model))
        self.image_size.write(image_size)
        self.tiles = ParamField(_param(model, "tiles"))  # fixed for every trial, like the image size
        self.tile_overlap = ParamField(_param(model, "tile_overlap"))
        self.space = w.Textarea(layout=w.Layout(width="600px", height="180px"), description="search space", style=STYLE)
        self.trials = ParamField(TRIALS)
        self.device = device_selector()
        self.epochs = ParamField(EPOCHS)
        self.metric = w.Dropdown(options=list(METRICS), value="auroc", description="metric", style=STYLE)
        self.objective = w.Dropdown(
            options=[("the labelled test split", "test"), ("proxy: held-out normals + synthetic defects", "proxy")],
            value="test", description="score trials on", style=STYLE, layout=w.Layout(width="480px"),
        )  # fmt: skip
        self.defects = defects_selector()  # shown with the proxy objective only
        self.defects.layout.display = "none"
        self.study = w.Text(value="", placeholder="<model>-<category>", description="study name", style=STYLE)
        self.start = w.Button(description="Start", button_style="primary", icon="play")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.train_best = w.Button(description="Train with best", icon="arrow-right", disabled=True)
        self.status = Status()
        self.table = w.HTML(layout=w.Layout(max_height="320px", overflow="auto", width="100%"))
        self.plot = w.Image(format="png", layout=w.Layout(max_width="560px", display="none"))
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="260px"))
        self.stage = w.HTML("idle")
        self.job: Job | None = None
        self.wanted = 10
        self.result = None
        self.rows: list[dict[str, Any]] = []
        self._best_listeners: list[Callable[[str, dict, dict, Path], None]] = []
        super().__init__(
            [
                self.model,
                self.image_size,
                self.tiles,
                self.tile_overlap,
                self.space,
                self.trials,
                self.epochs,
                self.device,
                self.objective,
                self.defects,
                w.HBox([self.metric, self.study]),
                w.HBox([self.start, self.stop, self.train_best, self.progress, self.stage]),
                self.status,
                self.plot,
                self.table,
            ]
        )
        self.model.observe(lambda _: self._model_changed(), names="value")
        self.objective.observe(lambda _: self._objective_changed(), names="value")
        self.start.on_click(lambda _: self.begin())
        self.stop.on_click(lambda _: self.job and self.job.stop())
        self.train_best.on_click(lambda _: self._hand_over())
        self.epochs.input.disabled = not get_spec(model).trained
        self.reset_space()

    def set_data(self, data_root: str, category: str) -> None:
        """Tune on this data root and category (the Data panel calls this)."""
        self.data_root, self.category_name = data_root, category

    def on_train_best(self, callback: Callable[[str, dict, dict, Path], None]) -> None:
        """Call ``callback(model, best_params, train_options, run_dir)`` when "Train with best" is clicked."""
        self._best_listeners.append(callback)

    def _model_changed(self) -> None:
        size = self.image_size.input.value
        self.image_size.param = _size_param(self.model.value)  # EfficientAD's own rule
        self.image_size.note.value = f"<small style='color:#57606a'>allowed: {self.image_size.param.rule}</small>"
        self.image_size.input.value = size
        self.image_size.check()
        self.epochs.input.disabled = not get_spec(self.model.value).trained  # fitted in one pass: no epochs
        self.reset_space()

    def _objective_changed(self) -> None:
        self.defects.layout.display = None if self.objective.value == "proxy" else "none"

    def reset_space(self) -> None:
        """Fill the editor with the model's default search space (seed 001 table, offline backbones)."""
        text = yaml.safe_dump(default_search_space(self.model.value), sort_keys=False, default_flow_style=None)
        self.space.value = text

    def begin(self) -> Job | None:
        """Start the study in the background; returns the job."""
        from ad_core.tune import tune

        if self.job is not None and self.job.running:
            self.status.error("a study is already running: stop it first")
            return None
        try:
            space = yaml.safe_load(self.space.value) or {}
            trials, image_size, tiles = self.trials.read(), self.image_size.read(), self.tiles.read()
            overlap = self.tile_overlap.read()
            epochs = self.epochs.read() if get_spec(self.model.value).trained else None
            if not self.category_name:
                raise ValueError("choose a category in the Data tab first")
        except Exception as exc:
            self.status.error(f"search space: not valid YAML ({exc})" if isinstance(exc, yaml.YAMLError) else exc)
            return None
        self.rows, self.result, self.table.value = [], None, ""
        show_png(self.plot, None)
        self.progress.value, self.progress.max, self.progress.bar_style = 0, trials, "info"
        self.stage.value = f"trial 0/{trials}"
        self.wanted = trials
        self.train_best.disabled = True
        self._busy(True)
        self.status.info(f"tuning {self.model.value} on {self.category_name} ...")
        model, metric, device, objective = self.model.value, self.metric.value, self.device.value, self.objective.value
        kinds = [self.defects.value] if objective == "proxy" and self.defects.value else None
        fixed = {"image_size": image_size, **({"tiles": tiles} if tiles else {})}  # empty field: the default
        fixed.update({"tile_overlap": overlap} if overlap else {})

        def work(stop: threading.Event):
            return tune(
                model,
                self.category_name,
                self.data_root,
                self.models_root,
                trials=trials,
                search_space=space,
                study=self.study.value or None,
                metric=metric,
                objective=objective,
                proxy_kinds=kinds,
                epochs=epochs,
                stop=stop,
                progress=False,
                on_trial=self._trial,
                device=device,
                **fixed,
            )

        self.job = Job(work, self._done, self._failed).start()
        return self.job

    def _busy(self, busy: bool) -> None:
        self.start.disabled, self.stop.disabled, self.model.disabled = busy, not busy, busy
        self.objective.disabled = self.defects.disabled = busy

    def _trial(self, trial, study) -> None:
        from ad_core.viz import history_figure

        self.rows = [
            {"trial": t.number, "state": t.state.name.lower(), "value": t.value, **t.params}
            for t in study.trials
            if t.state.name != "RUNNING"
        ]
        done = len([r for r in self.rows if r["state"] in ("complete", "pruned")])
        self.status.info(f"{done} of {self.wanted} trials finished ...")
        self.progress.value = min(done, self.progress.max)
        self.stage.value = f"trial {done}/{self.wanted}"
        values = [r["value"] if r["state"] == "complete" else None for r in self.rows]
        what = "proxy" if self.objective.value == "proxy" else "test"
        fig = history_figure(values, "optimisation history", f"{what} {self.metric.value.upper()}")
        show_png(self.plot, png_bytes(fig))
        self.table.value = _table(self.rows)

    def _done(self, result) -> None:
        self.result = result
        self._busy(False)
        self.progress.bar_style, self.stage.value = "success", "done"
        if result.best_params is None:
            self.status.error("no trial finished: nothing to train yet")
            return
        self.train_best.disabled = False
        self.status.ok(
            f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed; best trial "
            f"{result.best_trial}: {result.best_value:.4f}; files in",
            file_link(RunDir(result.run_dir).param),
        )

    def _failed(self, exc: BaseException) -> None:
        from ad_core.errors import TrainingStopped

        self._busy(False)
        stopped = isinstance(exc, TrainingStopped)
        self.progress.bar_style, self.stage.value = ("warning", "stopped") if stopped else ("danger", "failed")
        self.status.error(exc)

    def _hand_over(self) -> None:
        if self.result is None or self.result.best_params is None:
            return
        train = {"epochs": self.epochs.read(), "seed": 0}
        for listener in self._best_listeners:
            listener(self.model.value, dict(self.result.best_params), train, self.result.run_dir)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(
                f"<td>{v:.4f}</td>"
                if isinstance(v, float)
                else f"<td>{html.escape(str(v if v is not None else ''))}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    style = "font-size:85%;border-collapse:collapse;table-layout:auto;word-break:break-word"
    return f"<table style='{style}'><tr>{head}</tr>{''.join(body)}</table>"
