"""Review panel: work through the frames the robot cell captured, label them, retrain and re-test.

The state (:class:`ReviewState`, a ``traitlets.HasTraits`` with no widget import) holds the queue,
the frame shown, the counts and the before/after figures; the view (:class:`ReviewPanel`) builds the
widgets and links them to it. Keys N / A / S label the frame under the mouse pointer as normal,
anomaly or skip, U undoes (ipyevents); the buttons do the same.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
from traitlets import Dict, HasTraits, Int, List, Unicode, observe

from ad_core.errors import ADCoreError
from ad_core.review import LABELS, ReviewItem, ReviewQueue
from jupyter_ext._common import STYLE, Job, Status

KEYS = {"n": "normal", "a": "anomaly", "s": "skip"}


class ReviewState(HasTraits):
    """The review queue of one category and what the person has done with it."""

    data_root = Unicode("data")
    category = Unicode("")
    model = Unicode("", help="run directory or engine folder that draws the overlay (default: the sidecar's model)")
    normal_to = Unicode("train")
    position = Int(0)
    waiting = Int(0)
    caption = Unicode("")
    message = Unicode("")
    counts = Dict()
    before_after = List()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue: ReviewQueue | None = None
        self.items: list[ReviewItem] = []
        self._inspectors: dict[str, Any] = {}

    @observe("data_root", "category", "normal_to")
    def _reload(self, _=None) -> None:
        self.load()

    def load(self) -> None:
        """Read the queue again (new captures arrive while the panel is open)."""
        self.items = []
        if not self.category:
            self.queue, self.waiting, self.caption = None, 0, ""
            return
        try:
            self.queue = ReviewQueue(self.data_root, self.category, self.normal_to)
            self.items = self.queue.items()
        except ADCoreError as exc:
            self.queue, self.message = None, str(exc)
        self.waiting = len(self.items)
        self.position = 0
        self._show()

    @property
    def current(self) -> ReviewItem | None:
        """The frame shown, or None when the queue is empty."""
        return self.items[self.position] if 0 <= self.position < len(self.items) else None

    def _show(self) -> None:
        item = self.current
        self.caption = item.caption() if item else ""
        self.counts = self.queue.counts() if self.queue else {}
        if item is None and self.queue is not None and not self.message:
            self.message = f"the queue {self.queue.folder} is empty"

    def label(self, label: str) -> Path | None:
        """Move the frame shown where ``label`` says; the next one is shown."""
        item = self.current
        if item is None or self.queue is None:
            return None
        dest = self.queue.label(item, label)
        self.items.pop(self.position)
        self.waiting = len(self.items)
        self.position = min(self.position, max(0, len(self.items) - 1))
        self.message = f"{item.name}: {label} -> {dest}"
        self._show()
        return dest

    def undo(self) -> None:
        """Put the last labelled frame back and show it."""
        if self.queue is None:
            return
        back = self.queue.undo()
        if back is None:
            self.message = "nothing to undo"
            return
        self.items = self.queue.items()
        self.waiting = len(self.items)
        self.position = next(i for i, it in enumerate(self.items) if it.path == back)
        self.message = f"{back.name} is back in the queue"
        self._show()

    # -- the picture -------------------------------------------------------------------------------
    def model_source(self, item: ReviewItem) -> str:
        """The model that draws the overlay: the one set, else the one that captured the frame (when present)."""
        candidate = self.model or str(item.info.get("model") or "")
        return candidate if candidate and Path(candidate).exists() else ""

    def picture(self, item: ReviewItem) -> tuple[bytes, str]:
        """PNG of the frame (with the anomaly overlay when a model is at hand) and a line about its score."""
        from ad_core.data.images import read_image
        from ad_core.inspector import Inspector

        rgb = read_image(item.path)
        source = self.model_source(item)
        if not source:
            return _png(rgb), "no model to draw the overlay (set one, or capture with a node that has it)"
        if source not in self._inspectors:  # an engine runs as deployed; a run directory in torch (no export)
            engine = Path(source).suffix in (".onnx", ".plan") or (Path(source) / "model.onnx").is_file()
            self._inspectors[source] = Inspector.open(source, None if engine else "torch")
        result = self._inspectors[source](rgb)
        return _png(result.overlay()), (f"score now {result.score:.3f} ({result.decision}) with {Path(source).name}")

    # -- follow-up -------------------------------------------------------------------------------
    def run_of_model(self) -> Path:
        """The run directory behind the model in use (retraining needs its settings)."""
        from ad_core.bundle import bundle_dir

        source = self.model or next((str(i.info.get("model")) for i in self.items if i.info.get("model")), "")
        if not source:
            raise ADCoreError("set the model (a run directory) first: its settings are retrained")
        folder = bundle_dir(source)
        return folder.parent if folder.name == "pytorch" else folder

    def retrain(self, stop=None, models_root: str | Path | None = None) -> Path:
        """Train the model's configuration again on the category, now with the new normal images."""
        from ad_core import train
        from ad_core.bundle import read_meta
        from ad_core.models import get_spec

        run = self.run_of_model()
        meta = read_meta(run)
        spec = get_spec(meta["model"])
        hparams = spec.from_meta(meta)
        root = Path(models_root) if models_root else run.parent.parent.parent
        options = {"stop": stop} if stop is not None else {}
        return train(meta["model"], self.category, self.data_root, root, progress=False, **options, **hparams)

    def retest(self, run: str | Path, before: str | Path | None = None) -> dict:
        """Test ``run`` on the category's test split (now with the labelled frames); before/after figures."""
        from ad_core import evaluate
        from ad_core.bundle import read_meta

        old_meta = read_meta(before or run)
        report = evaluate(run, self.data_root, save_images=False, progress=False)
        old = old_meta.get("test_metrics") or {}
        rows = [
            ("test images (normal / anomalous)",
             f"{old.get('n_normal', '?')} / {old.get('n_anomaly', '?')}",
             f"{report['n_normal']} / {report['n_anomaly']}"),
            ("image AUROC", _num(old.get("image_auroc")), _num(report["image_auroc"])),
            ("best F1", _num(old.get("image_f1")), _num(report["image_f1"])),
            ("automatic threshold (raw)", _num(old_meta.get("image_threshold_auto"), 6),
             _num(report["image_threshold_auto"], 6)),
        ]  # fmt: skip
        self.before_after = [list(r) for r in rows]
        return report


def _num(v, digits: int = 4) -> str:
    """``v`` with ``digits`` decimals (significant digits above 4: raw thresholds), or a dash."""
    if v is None:
        return "—"
    return f"{float(v):.{digits}g}" if digits > 4 else f"{float(v):.{digits}f}"


def _png(rgb: np.ndarray, width: int = 480) -> bytes:
    import io

    from PIL import Image

    img = Image.fromarray(rgb)
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class ReviewPanel(w.VBox):
    """The view: category and model fields, the frame, Normal / Anomaly / Skip / Undo, follow-up buttons."""

    def __init__(
        self, data_root: str | Path = "data", category: str = "", model: str = "", models_root: str | Path = "models"
    ) -> None:
        self.state = ReviewState(data_root=str(data_root), category=category, model=model)
        self.models_root = models_root
        self.root = w.Text(description="data root", style=STYLE, layout=w.Layout(width="420px"))
        self.category = w.Text(description="category", style=STYLE, layout=w.Layout(width="420px"))
        self.model = w.Text(
            description="model (overlay)", placeholder="run directory or engine folder", style=STYLE,
            layout=w.Layout(width="560px"),
        )  # fmt: skip
        for widget, name in ((self.root, "data_root"), (self.category, "category"), (self.model, "model")):
            widget.continuous_update = False
            w.link((widget, "value"), (self.state, name))
        self.refresh = w.Button(description="Refresh", icon="refresh")
        self.image = w.Image(format="png", layout=w.Layout(max_width="480px", border="1px solid #ccc"))
        self.frame_box = w.Box([self.image], layout=w.Layout(width="fit-content"))
        self.caption = w.HTML()
        self.score = w.HTML()
        self.buttons = {
            "normal": w.Button(description="Normal (N)", button_style="success", icon="check"),
            "anomaly": w.Button(description="Anomaly (A)", button_style="danger", icon="times"),
            "skip": w.Button(description="Skip (S)", icon="forward"),
        }
        self.undo = w.Button(description="Undo (U)", icon="undo")
        self.counts = w.HTML()
        self.retrain_button = w.Button(description="Retrain with the new normals", icon="cogs", layout=_auto())
        self.retest_button = w.Button(description="Re-test", icon="check-square", layout=_auto())
        self.before_after = w.HTML()
        self.status = Status()
        self.job: Job | None = None
        super().__init__(
            [
                w.HTML("<b>Review</b>: frames the cell captured (<code>data/review/&lt;category&gt;/</code>). "
                       "Keys with the pointer on the frame: <b>N</b> normal, <b>A</b> anomaly, <b>S</b> skip, <b>U</b> undo."),
                w.HBox([self.root, self.refresh]),
                self.category,
                self.model,
                self.counts,
                self.frame_box,
                self.caption,
                self.score,
                w.HBox([*self.buttons.values(), self.undo]),
                w.HBox([self.retrain_button, self.retest_button]),
                self.before_after,
                self.status,
            ]
        )  # fmt: skip
        for label, button in self.buttons.items():
            button.on_click(lambda _, label=label: self.label(label))
        self.undo.on_click(lambda _: self.do_undo())
        self.refresh.on_click(lambda _: self.state.load())
        self.retrain_button.on_click(lambda _: self.start_retrain())
        self.retest_button.on_click(lambda _: self.start_retest())
        self.state.observe(lambda _: self._render(), names=["position", "waiting", "caption", "counts"])
        self.state.observe(lambda _: self._show_before_after(), names="before_after")
        with self.hold_sync():
            self.root.value, self.category.value, self.model.value = str(data_root), category, model
        self._keys()
        self._render()

    def _keys(self) -> None:
        try:
            from ipyevents import Event
        except ImportError:  # the buttons still work
            return
        self._events = Event(source=self.frame_box, watched_events=["keydown"], prevent_default_action=True)
        self._events.on_dom_event(self._on_key)

    def _on_key(self, event: dict) -> None:
        key = str(event.get("key", "")).lower()
        if key in KEYS:
            self.label(KEYS[key])
        elif key == "u":
            self.do_undo()

    def label(self, label: str) -> None:
        """Label the frame shown (a button or a key)."""
        try:
            self.state.label(label)
            self.status.ok(self.state.message)
        except ADCoreError as exc:
            self.status.error(exc)

    def do_undo(self) -> None:
        """Undo the last label."""
        self.state.undo()
        self.status.info(self.state.message)

    def _render(self) -> None:
        item = self.state.current
        c = self.state.counts
        self.counts.value = (
            f"<b>{self.state.waiting}</b> waiting &middot; labelled now: {c.get('normal', 0)} normal, "
            f"{c.get('anomaly', 0)} anomaly, {c.get('skip', 0)} skipped"
        )
        for button in (*self.buttons.values(),):
            button.disabled = item is None
        if item is None:
            self.image.value, self.caption.value = b"", ""
            self.image.layout.display = "none"  # no broken picture when there is nothing to show
            self.score.value = html.escape(self.state.message)
            return
        self.image.layout.display = None
        self.caption.value = (
            f"<b>{self.state.position + 1} / {self.state.waiting}</b> &middot; {html.escape(item.caption())}"
        )
        try:
            png, line = self.state.picture(item)
            self.image.value, self.score.value = png, html.escape(line)
        except Exception as exc:
            self.status.error(exc)

    # -- follow-up ---------------------------------------------------------------------------------
    def start_retrain(self) -> Job:
        """Retrain the model's configuration with the labelled normals, then re-test the new run."""
        self._busy(True)
        self.status.info("retraining with the new normal images ...")

        def work(stop):
            before = self.state.run_of_model()
            run = self.state.retrain(stop, self.models_root)
            self.state.retest(run, before)
            return run

        def done(run):
            self.state.model = str(run)
            self._busy(False)
            self.status.ok(f"retrained and re-tested: {run}")

        self.job = Job(work, done, self._failed, kind="retrain").start()
        return self.job

    def start_retest(self) -> Job:
        """Test the model again on the test split, which now holds the labelled frames."""
        self._busy(True)
        self.status.info("testing ...")

        def work(stop):
            run = self.state.run_of_model()
            return self.state.retest(run)

        def done(report):
            self._busy(False)
            self.status.ok(f"re-tested: image AUROC {report['image_auroc']:.4f}")

        self.job = Job(work, done, self._failed, kind="retest").start()
        return self.job

    def _failed(self, exc: BaseException) -> None:
        self._busy(False)
        self.status.error(exc)

    def _busy(self, busy: bool) -> None:
        self.retrain_button.disabled = self.retest_button.disabled = busy

    def _show_before_after(self) -> None:
        rows = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
            for a, b, c in self.state.before_after
        )
        self.before_after.value = (
            "<table class='ad-before-after'><tr><th></th><th>before</th><th>after</th></tr>" + rows + "</table>"
        )


def _auto() -> w.Layout:
    return w.Layout(width="auto")


__all__ = ["LABELS", "ReviewPanel", "ReviewState"]
