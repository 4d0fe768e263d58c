"""Data panel: choose the data root and category, see the counts and a few images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as w

from ad_core.data.layout import available_categories, resolve_category
from ad_core.errors import ADCoreError
from jupyter_ext._common import LAYOUT_WIDE, STYLE, Status, card, thumbnail


class DataPanel(w.VBox):
    """Pick ``data_root`` and a category; counts of train / test normal / test anomaly and thumbnails."""

    def __init__(
        self,
        data_root: str | Path = "data",
        category: str | None = None,
        n_thumbs: int = 4,
        models_root: str | Path = "models",
    ) -> None:
        self.root = w.Text(value=str(data_root), description="data root", style=STYLE, layout=LAYOUT_WIDE)
        self.models_root = w.Text(
            value=str(models_root), description="models root", style=STYLE, layout=LAYOUT_WIDE, continuous_update=False
        )
        self.category = w.Dropdown(options=[], description="category", style=STYLE)
        self.refresh = w.Button(description="Refresh", icon="refresh")
        self.counts = w.HTML()
        self.grid = w.VBox()
        self.status = Status()
        self.n_thumbs = n_thumbs
        self.data = None
        self._listeners: list[Callable[[str, str], None]] = []
        self._error_listeners: list[Callable[[str], None]] = []
        super().__init__(
            [w.HBox([self.root, self.refresh]), self.models_root, self.category, self.counts, self.status, self.grid]
        )
        self.refresh.on_click(lambda _: self.scan())
        self.root.observe(lambda _: self.scan(), names="value")
        self.category.observe(lambda _: self.show(), names="value")
        self.scan(category)

    def on_change(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(data_root, category)`` whenever a valid category is shown."""
        self._listeners.append(callback)

    def on_error(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(message)`` when the chosen root or category cannot be used (Train then trains nothing)."""
        self._error_listeners.append(callback)

    def _failed(self, message: str) -> None:
        self.status.error(message)
        for listener in self._error_listeners:
            listener(message)

    def scan(self, prefer: str | None = None) -> None:
        """List the categories under the data root."""
        root = Path(self.root.value).expanduser()
        if not root.is_dir():
            self.category.options = []
            self._clear()
            self._failed(f"data root {root} does not exist; expected a folder with train/<CATEGORY>/ in it")
            return
        found = available_categories(root)
        if not found:
            self.category.options = []
            self._clear()
            self._failed(
                f"{root} holds no category: expected {root}/train/<CATEGORY>/ (seed layout) or "
                f"{root}/<category>/train/good/ (MVTec layout). `ad-core data sample` builds a sample."
            )
            return
        current = prefer or self.category.value
        self.category.options = found
        self.category.value = current if current in found else found[0]
        self.show()

    def _clear(self) -> None:
        self.counts.value = ""
        self.grid.children = ()
        self.data = None

    def show(self) -> None:
        """Counts and thumbnails of the chosen category; a clear message when it is malformed."""
        if not self.category.value:
            return
        try:
            data = resolve_category(self.root.value, self.category.value)
        except ADCoreError as exc:
            self._clear()
            self._failed(str(exc))
            return
        self.data = data
        c = data.counts()
        self.counts.value = (
            f"<b>{c['train']}</b> training (normal) &middot; <b>{c['test_normal']}</b> test normal &middot; "
            f"<b>{c['test_anomaly']}</b> test anomalous &middot; layout: {data.layout}"
            f"{' &middot; pixel masks' if data.has_masks else ''}"
        )
        if c["test_normal"] == 0 or c["test_anomaly"] == 0:
            self.status.error(
                "no test images of both classes: training works, but testing, tuning and the threshold "
                "explorer need test/<CATEGORY>/normal and test/<CATEGORY>/anomaly"
            )
        else:
            self.status.ok("ready")
        rows = []
        for title, paths in (
            ("train (normal)", data.train[: self.n_thumbs]),
            ("test normal", [s.path for s in data.test if s.label == 0][: self.n_thumbs]),
            ("test anomalous", [s.path for s in data.test if s.label == 1][: self.n_thumbs]),
        ):
            if paths:
                cards = [card(thumbnail(p), p.name) for p in paths]
                rows.append(w.VBox([w.HTML(f"<b>{title}</b>"), w.HBox(cards)]))
        self.grid.children = rows
        for listener in self._listeners:
            listener(str(data.data_root), self.category.value)
