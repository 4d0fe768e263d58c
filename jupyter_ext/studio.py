"""AnomalyStudio: the panels as tabs, wired together (data -> train/tune -> threshold/export)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w

from jupyter_ext.data import DataPanel
from jupyter_ext.export import ExportPanel
from jupyter_ext.review import ReviewPanel
from jupyter_ext.threshold import ThresholdExplorer
from jupyter_ext.train import TrainPanel
from jupyter_ext.tune import TunePanel

TITLES = ("Data", "Train", "Tune", "Threshold", "Export", "Review")


class AnomalyStudio(w.VBox):
    """Everything seed 000 step 2 does in one place.

    Choosing a category in Data sets it for Train, Tune and Review; "Train with best" in Tune fills the
    Train form and switches to it; a finished training loads its run into Threshold and Export.
    """

    def __init__(
        self,
        data_root: str | Path = "data",
        models_root: str | Path = "models",
        category: str | None = None,
        model: str = "patchcore",
        image_size: int = 256,
    ) -> None:
        self.data = DataPanel(data_root, category)
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
        self.tune.on_train_best(self._train_best)
        self.train.on_trained(self._trained)
        if self.data.data is not None:
            self._data_chosen(str(self.data.data.data_root), self.data.category.value)

    def _data_chosen(self, data_root: str, category: str) -> None:
        self.train.set_data(data_root, category)
        self.tune.set_data(data_root, category)
        with self.review.hold_sync():
            self.review.root.value, self.review.category.value = data_root, category

    def _train_best(self, model: str, params: dict, train: dict, run_dir: Path) -> None:
        self.train.set_params(model, params, train, run_dir)
        self.tabs.selected_index = TITLES.index("Train")

    def _trained(self, run: Path, report: dict | None) -> None:
        self.export.set_run(run)
        self.review.model.value = str(run)
        if report is not None:
            self.threshold.load(run)
