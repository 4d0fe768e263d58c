"""AnomalyStudio: the panels as tabs, wired together (data -> train/tune -> threshold/export)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import ipywidgets as w

from ad_core.fileio import write_json_atomic
from jupyter_ext.data import DataPanel
from jupyter_ext.export import ExportPanel
from jupyter_ext.review import ReviewPanel
from jupyter_ext.threshold import ThresholdExplorer
from jupyter_ext.train import TrainPanel
from jupyter_ext.tune import TunePanel

TITLES = ("Data", "Train", "Tune", "Threshold", "Export", "Review")
MEMORY = ".ad-inspect-studio.json"  # in the notebook's folder: the roots last used there


def recall(folder: str | Path | None = None) -> dict:
    """The data and models roots last used in ``folder`` (the working folder by default); empty when none."""
    path = Path(folder or os.getcwd()) / MEMORY
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def remember(folder: str | Path | None = None, **roots: str) -> None:
    """Keep the roots for the next studio opened in ``folder`` (the Launcher card's notebook passes none)."""
    path = Path(folder or os.getcwd()) / MEMORY
    current = recall(folder)
    if {**current, **roots} != current:
        with contextlib.suppress(OSError):  # a read-only folder: the studio works, it only does not remember
            write_json_atomic(path, {**current, **roots})


class AnomalyStudio(w.VBox):
    """Everything seed 000 step 2 does in one place.

    Choosing a category in Data sets it for Train, Tune and Review; "Train with best" in Tune fills the
    Train form and switches to it; a finished training loads its run into Threshold and Export.
    """

    def __init__(
        self,
        data_root: str | Path | None = None,
        models_root: str | Path | None = None,
        category: str | None = None,
        model: str = "patchcore",
        image_size: int = 256,
    ) -> None:
        remembered = recall()
        data_root = data_root or remembered.get("data_root") or "data"
        models_root = models_root or remembered.get("models_root") or "models"
        self.data = DataPanel(data_root, category, models_root=models_root)
        self.train = TrainPanel(data_root, "", models_root, model)
        self.tune = TunePanel(data_root, "", models_root, model, image_size)
        self.threshold = ThresholdExplorer()
        self.export = ExportPanel()
        self.review = ReviewPanel(data_root, category or "", models_root=models_root)
        self.tabs = w.Tab(
            children=[self.data, self.train, self.tune, self.threshold, self.export, self.review], titles=TITLES
        )
        header = w.HTML("<h3 style='margin:4px 0'>ad-inspect &middot; Anomaly Studio</h3>")
        super().__init__([header, self.tabs])
        self.data.on_change(self._data_chosen)
        self.data.on_error(self.train.data_failed)
        self.data.models_root.observe(lambda _: self._models_root(), names="value")
        self.tune.on_train_best(self._train_best)
        self.train.on_trained(self._trained)
        if self.data.data is not None:
            self._data_chosen(str(self.data.data.data_root), self.data.category.value)
        elif self.data.status.text:  # the remembered or given root did not work: Train must not use it
            self.train.data_failed(self.data.status.text.lstrip("✘ "))

    def _data_chosen(self, data_root: str, category: str) -> None:
        models_root = self.data.models_root.value
        self.train.set_data(data_root, category, models_root)
        self.tune.set_data(data_root, category)
        remember(data_root=data_root, models_root=models_root)
        with self.review.hold_sync():
            self.review.root.value, self.review.category.value = data_root, category

    def _models_root(self) -> None:
        root = self.data.models_root.value
        self.train.models_root = self.tune.models_root = root
        self.review.models_root = root
        remember(data_root=self.data.root.value, models_root=root)

    def _train_best(self, model: str, params: dict, train: dict, run_dir: Path) -> None:
        self.train.set_params(model, params, train, run_dir)
        self.tabs.selected_index = TITLES.index("Train")

    def _trained(self, run: Path, report: dict | None) -> None:
        self.export.set_run(run)
        self.review.model.value = str(run)
        if report is not None:
            self.threshold.load(run)
