"""Threshold explorer: score histogram, the threshold on both scales, live rates, set by target, Save.

The numbers live in :class:`ThresholdState` (``traitlets.HasTraits``, no widgets): the threshold as
computed, to full precision, its raw equivalent, the operating point at it, the saved value. The
view (:class:`ThresholdExplorer`) only shows them. A browser's slider rounds to its step (0.4289 for
0.428885); that rounding must never become the threshold (it once let a defect through), so the
slider is not linked both ways: a slider move counts only when it is more than half a step away from
the state's value. Everything one view shows (status line, metrics, histogram, gallery) is computed
from the same state, and the value saved is the state's, checked again after it is written.

A second part does the same for the pixel threshold (seed 003): where the defect is drawn.
"""

from __future__ import annotations

import functools
import html
import threading
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
from traitlets import Bool, Dict, Float, HasTraits, Unicode, observe

from ad_core.bundle import PIXEL_KEYS, bundle_dir, normalize_with, read_meta, save_threshold
from ad_core.rundir import RunDir
from ad_core.scoring import denormalize, operating_point, threshold_for_target
from jupyter_ext._common import LAYOUT_WIDE, STYLE, Status, card, png_bytes, show_png, thumbnail

TARGETS = {"miss rate at most (%)": "miss", "false-reject rate at most (%)": "false_reject"}
STEP = 0.0001  # the slider's step: what a person can set by dragging


class ThresholdState(HasTraits):
    """A tested run's test scores and the threshold being explored (normalised and raw, always in step)."""

    threshold = Float(0.5, help="the normalised threshold, to full precision: what decides and what is saved")
    raw = Float(0.0, help="the raw score the threshold equals")
    saved = Float(0.5, help="meta.json's image_threshold")
    pixel_threshold = Float(0.5)
    pixel_raw = Float(0.0)
    pixel_saved = Float(0.5)
    loaded = Bool(False)
    point = Dict(help="precision, recall, F1, rates and counts at the threshold")
    message = Unicode("")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meta: dict[str, Any] = {}
        self.run_dir: Path | None = None
        self.files: list[str] = []
        self.labels = np.zeros(0, bool)
        self.scores = np.zeros(0)
        self.normalized = np.zeros(0)
        self._busy = False

    # -- loading -----------------------------------------------------------------------------------
    def load(self, run: str | Path) -> None:
        """Read a tested run's meta.json and ``test_result/predictions.csv``; every number is recomputed."""
        folder = bundle_dir(run)
        meta = read_meta(folder)
        rows = RunDir.of(folder).predictions()
        self.meta, self.run_dir = meta, RunDir.of(folder).path
        self.files = [r["file"] for r in rows]
        self.labels = np.array([r["label"] == "anomaly" for r in rows])
        self.scores = np.array([float(r["raw_score"]) for r in rows])
        self.normalized = np.asarray(normalize_with(meta, self.scores), np.float64)
        self.saved = float(meta.get("image_threshold", 0.5))
        self.pixel_saved = float(meta.get("pixel_threshold", 0.5))
        self.loaded = True
        self.set(self.saved)  # even when it equals the current value: raw and the point are recomputed
        self.set_pixel(self.pixel_saved)

    # -- the image threshold -----------------------------------------------------------------------
    def raw_of(self, normalized: float) -> float:
        """The raw score a normalised threshold corresponds to."""
        m = self.meta
        return denormalize(normalized, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"])

    def set(self, normalized: float) -> None:
        """Make ``normalized`` the threshold; raw and the operating point follow (always, even if unchanged)."""
        self._busy = True
        try:
            self.threshold = float(np.clip(normalized, 0.0, 1.0))
            self.raw = self.raw_of(self.threshold)
        finally:
            self._busy = False
        self.point = operating_point(self.labels, self.normalized, self.threshold)

    def set_raw(self, raw: float) -> None:
        """Make the threshold the one that equals ``raw``."""
        self.set(float(normalize_with(self.meta, float(raw))))
        self._busy = True
        try:
            self.raw = float(raw)  # keep what was typed, though outside the calibration range it clips to 0 or 1
        finally:
            self._busy = False

    @observe("threshold")
    def _threshold_changed(self, change) -> None:
        if not self._busy and self.loaded:
            self.set(change["new"])

    def for_target(self, kind: str, percent: float) -> dict[str, Any]:
        """The threshold meeting a rate target with the least cost to the other rate; raises ValueError if none."""
        value = percent / 100.0
        if kind == "miss":
            thr = threshold_for_target(self.labels, self.normalized, max_miss_rate=value)
        else:
            thr = threshold_for_target(self.labels, self.normalized, max_false_reject=value)
        self.set(_off_the_edge(self.normalized, thr, toward_lower=kind == "miss"))
        return self.point

    def save(self, target: tuple[str, float] | None = None) -> dict[str, Any]:
        """Write the threshold (to full precision) into meta.json; check the target on the number read back."""
        meta = save_threshold(self.run_dir, self.threshold, note="threshold explorer")
        self.meta, self.saved = meta, float(meta["image_threshold"])
        written = read_meta(self.run_dir)["image_threshold"]
        check = operating_point(self.labels, self.normalized, written)
        if target is not None:
            kind, percent = target
            rate = check["miss_rate" if kind == "miss" else "false_reject_rate"]
            if not rate <= percent / 100.0 + 1e-12:
                raise AssertionError(f"the saved threshold {written} gives {rate:.1%}, above the target {percent}%")
        return check

    # -- the pixel threshold -----------------------------------------------------------------------
    @property
    def has_pixel_keys(self) -> bool:
        """Whether the run was tested with masks (else maps use the image keys, as the seed does)."""
        return all(k in self.meta for k in PIXEL_KEYS)

    def pixel_raw_of(self, normalized: float) -> float:
        """The raw map value a normalised pixel threshold corresponds to."""
        m = self.meta
        if self.has_pixel_keys:
            return denormalize(normalized, m["pixel_threshold_auto"], m["raw_pixel_min"], m["raw_pixel_max"])
        return self.raw_of(normalized)

    def set_pixel(self, normalized: float) -> None:
        """Make ``normalized`` the pixel threshold; its raw value follows."""
        self.pixel_threshold = float(np.clip(normalized, 0.0, 1.0))
        self.pixel_raw = self.pixel_raw_of(self.pixel_threshold)

    def save_pixel(self) -> dict[str, Any]:
        """Write the pixel threshold into meta.json."""
        meta = save_threshold(self.run_dir, self.pixel_threshold, note="threshold explorer", key="pixel_threshold")
        self.meta, self.pixel_saved = meta, float(meta["pixel_threshold"])
        return meta


def _one_at_a_time(method):
    """Serialise the explorer's actions: a load from the training thread and a click never interleave."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class ThresholdExplorer(w.VBox):
    """Load a tested run; move the threshold and watch precision, recall, F1, rates and the confusion matrix."""

    def __init__(self, run: str | Path | None = None, gallery_size: int = 12) -> None:
        self.state = ThresholdState()
        self.run = w.Text(value=str(run or ""), description="tested run", style=STYLE, layout=LAYOUT_WIDE)
        self.load_button = w.Button(description="Load", icon="folder-open")
        self.slider = w.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=STEP, readout_format=".4f", continuous_update=True,
            description="threshold (normalised)", style=STYLE, layout=LAYOUT_WIDE,
        )  # fmt: skip
        self.raw = w.FloatText(description="threshold (raw)", style=STYLE)
        self.exact = w.HTML()
        self.plot = w.Image(format="png", layout=w.Layout(max_width="560px", display="none"))
        self.metrics = w.HTML()
        self.target_kind = w.Dropdown(
            options=list(TARGETS), description="set by target", style=STYLE, layout=w.Layout(width="380px")
        )
        self.target_value = w.BoundedFloatText(value=5.0, min=0.0, max=100.0, step=0.5, layout=w.Layout(width="90px"))
        self.target_button = w.Button(description="Set", icon="crosshairs", layout=w.Layout(width="auto"))
        self.save_button = w.Button(
            description="Save to meta.json", button_style="success", icon="save", layout=w.Layout(width="auto")
        )
        self.pixel = PixelPart(self.state)
        self.gallery = w.VBox()
        self.status = Status()
        self.gallery_size = gallery_size
        self._target: tuple[str, float, float] | None = None
        self._lock = threading.RLock()  # the studio loads from the training thread while a person clicks
        super().__init__(
            [
                w.HBox([self.run, self.load_button]),
                self.slider,
                w.HBox([self.raw, self.exact]),
                w.HBox([self.target_kind, self.target_value, self.target_button, self.save_button]),
                self.status,
                w.HBox([self.plot, self.metrics]),
                self.gallery,
                self.pixel,
            ]
        )
        self.load_button.on_click(lambda _: self.load())
        self.slider.observe(self._slider_moved, names="value")
        self.raw.observe(self._raw_typed, names="value")
        self.target_button.on_click(lambda _: self.set_by_target())
        self.save_button.on_click(lambda _: self.save())
        self.state.observe(lambda _: self._show(), names=["threshold", "point", "saved"])
        self._enable(False)
        if run:
            self.load()

    # compatibility: the notebooks and the tests read these
    @property
    def meta(self) -> dict | None:
        """meta.json of the loaded run (None before a run is loaded)."""
        return self.state.meta if self.state.loaded else None

    @property
    def saved(self) -> float:
        """meta.json's image_threshold as loaded or last saved."""
        return self.state.saved

    @property
    def labels(self) -> np.ndarray:
        """Test labels (True: anomalous)."""
        return self.state.labels

    @property
    def normalized(self) -> np.ndarray:
        """Normalised test scores."""
        return self.state.normalized

    def _enable(self, on: bool) -> None:
        for widget in (self.slider, self.raw, self.target_button, self.save_button):
            widget.disabled = not on

    # -- loading -----------------------------------------------------------------------------------
    @_one_at_a_time
    def load(self, run: str | Path | None = None) -> bool:
        """Read a run's meta.json and ``test_result/predictions.csv``; False (and a message) if it cannot."""
        if run is not None:
            self.run.value = str(run)
        try:
            self.state.load(self.run.value)
        except Exception as exc:
            self.state.loaded = False
            self._enable(False)
            self._clear()
            self.status.error(exc)
            return False
        s = self.state
        self._enable(True)
        self._show()
        self.pixel.load(self.run.value)
        self.status.ok(
            f"{s.meta['model']} / {s.meta['category']}: {int((~s.labels).sum())} normal and "
            f"{int(s.labels.sum())} anomalous test images; saved threshold {s.saved:.6g}"
        )
        return True

    def _clear(self) -> None:
        self.metrics.value, self.exact.value = "", ""
        show_png(self.plot, None)
        self.gallery.children = ()

    # -- the threshold -----------------------------------------------------------------------------
    def raw_of(self, normalized: float) -> float:
        """The raw score that a normalised threshold corresponds to."""
        return self.state.raw_of(normalized)

    @_one_at_a_time
    def set_threshold(self, normalized: float) -> None:
        """Move the threshold (slider, raw field, plot and metrics follow)."""
        self.state.set(normalized)

    @_one_at_a_time
    def _slider_moved(self, change) -> None:
        # the browser sends back the value it displays (rounded to the step): that is not a move
        if self.state.loaded and abs(change["new"] - self.state.threshold) > STEP / 2:
            self.state.set(change["new"])

    @_one_at_a_time
    def _raw_typed(self, change) -> None:
        if self.state.loaded and not np.isclose(change["new"], self.state.raw, rtol=1e-9, atol=1e-12):
            self.state.set_raw(change["new"])

    def point(self) -> dict:
        """Precision, recall, F1, false-reject and miss rates and the confusion counts at the current threshold."""
        return dict(self.state.point)

    @_one_at_a_time
    def set_by_target(self) -> None:
        """Choose the threshold that meets the chosen rate with the least cost to the other one."""
        kind, value = TARGETS[self.target_kind.value], float(self.target_value.value)
        try:
            p = self.state.for_target(kind, value)
        except ValueError as exc:
            self.status.error(str(exc))
            return
        self._target = (kind, value, self.state.threshold)
        self.status.ok(
            f"threshold {self.state.threshold:.6g}: miss rate {p['miss_rate']:.1%}, false-reject rate "
            f"{p['false_reject_rate']:.1%} (target: {self.target_kind.value.split(' at')[0]} at most {value:g} %)"
        )

    @_one_at_a_time
    def save(self) -> None:
        """Write the threshold into meta.json (atomically, with who and when) and check it on what was written."""
        if not self.state.loaded:
            return
        # the promise a target made holds for the threshold it set: checked again on the value written
        target = self._target[:2] if self._target and self._target[2] == self.state.threshold else None
        try:
            check = self.state.save(target)
        except Exception as exc:
            self.status.error(exc)
            return
        entry = self.state.meta["threshold_history"][-1]
        promise = ""
        if target is not None:
            promise = f"; checked on the saved value: miss rate {check['miss_rate']:.1%}, false-reject {check['false_reject_rate']:.1%}"
        self.status.ok(
            f"saved image_threshold {entry['image_threshold']:.6g} (raw {entry['raw']:.6g}) to "
            f"{bundle_dir(self.state.run_dir) / 'meta.json'} by {entry['by']} at {entry['at']}{promise}"
        )

    # -- drawing -----------------------------------------------------------------------------------
    def _show(self) -> None:
        """Slider, raw field, metrics, histogram and gallery, all from the state."""
        s = self.state
        if not s.loaded:
            return
        with self.hold_sync():
            self.slider.value = s.threshold  # shown rounded; the state keeps every digit
            if not np.isclose(self.raw.value, s.raw, rtol=1e-9, atol=1e-12):
                self.raw.value = s.raw
        self.exact.value = f"<small>exactly {s.threshold:.8g} (raw {s.raw:.8g}); saved {s.saved:.8g}</small>"
        self.metrics.value = _metrics_html(s.point)
        show_png(self.plot, self._histogram())
        self._gallery()

    def update(self) -> None:
        """Redraw everything for the current threshold."""
        self._show()

    def _histogram(self) -> bytes:
        import matplotlib.pyplot as plt

        s = self.state
        shown = np.clip(s.normalized, 0.0, 1.0)  # the normalised scale is 0-1: clipped scores sit at its ends
        fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=90)
        bins = np.linspace(0.0, 1.0, 41)
        for flag, name, colour in ((False, "normal", "tab:blue"), (True, "anomaly", "tab:red")):
            ax.hist(shown[s.labels == flag], bins=bins, alpha=0.6, color=colour, label=name)
        ax.axvline(s.threshold, color="black", linestyle="--", label=f"threshold {s.threshold:.4f} (raw {s.raw:.4g})")
        if abs(s.saved - s.threshold) > 1e-12:
            ax.axvline(s.saved, color="grey", linestyle=":", label=f"saved {s.saved:.4f}")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("normalised score (0.5: the automatic threshold)")
        ax.set_ylabel("test images")
        # below the axes (tight_layout makes room for it): inside, the legend hid bars
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
        return png_bytes(fig)

    def changed(self) -> list[int]:
        """Indices of the images whose decision differs between the saved and the current threshold."""
        s = self.state
        return [int(i) for i in np.flatnonzero((s.normalized >= s.threshold) != (s.normalized >= s.saved))]

    def _gallery(self) -> None:
        s = self.state
        idx = self.changed()
        if not idx:
            self.gallery.children = (
                w.HTML("<small>no image changes side between the saved and this threshold</small>"),
            )
            return
        cards = []
        for i in idx[: self.gallery_size]:
            path = Path(s.files[i])
            sub = "anomaly" if s.labels[i] else "normal"
            overlays = sorted((RunDir(s.run_dir).test_result / "images" / sub).glob(f"*{path.stem}_overlay.png"))
            now = "flagged" if s.normalized[i] >= s.threshold else "passed"
            try:
                png = thumbnail(overlays[0] if overlays else path, 128)
            except Exception:
                continue
            cards.append(card(png, f"{sub}, now {now} ({s.normalized[i]:.3f})", 128))
        more = f" (first {self.gallery_size} of {len(idx)})" if len(idx) > self.gallery_size else ""
        title = w.HTML(f"<b>{len(idx)} image(s) change side</b> against the saved threshold{more}")
        self.gallery.children = (title, w.HBox(cards, layout=w.Layout(flex_flow="row wrap")))


class PixelPart(w.VBox):
    """The pixel threshold (seed 003): the defect outline on a few anomalous test images, Save."""

    def __init__(self, state: ThresholdState, n_images: int = 6) -> None:
        self.state, self.n_images = state, n_images
        self.title = w.HTML("<b>Where the defect is</b>: the pixel threshold cuts the anomaly map into the mask")
        self.slider = w.FloatSlider(
            value=0.5, min=0.0, max=1.0, step=STEP, readout_format=".4f", continuous_update=False,
            description="pixel threshold", style=STYLE, layout=LAYOUT_WIDE,
        )  # fmt: skip
        self.info = w.HTML()
        self.save_button = w.Button(description="Save pixel threshold", icon="save", layout=w.Layout(width="auto"))
        self.cards = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.status = Status()
        self.results: list[Any] = []
        self.masks: list[np.ndarray | None] = []
        super().__init__([self.title, w.HBox([self.slider, self.save_button]), self.info, self.status, self.cards])
        self.layout.display = "none"
        self.slider.observe(self._moved, names="value")
        self.save_button.on_click(lambda _: self.save())

    def load(self, run: str | Path) -> None:
        """Score a few anomalous test images with the run (torch) to draw their defect outlines."""
        from ad_core.data.images import read_image, read_mask
        from ad_core.data.layout import resolve_category
        from ad_core.inspector import Inspector

        s = self.state
        try:
            data = resolve_category(s.meta.get("data_root", "data"), s.meta["category"], require_test=True)
            picks = [x for x in data.test if x.label == 1][: self.n_images]
            inspector = Inspector.open(run, "torch")
            self.results = [inspector(read_image(x.path), x.path) for x in picks]
            self.masks = [read_mask(x.mask) if x.mask is not None else None for x in picks]
        except Exception as exc:
            self.layout.display = None
            self.status.error(f"cannot draw defect outlines: {exc}")
            return
        self.layout.display = None
        self.slider.value = s.pixel_threshold
        self._draw()

    def _moved(self, change) -> None:
        if abs(change["new"] - self.state.pixel_threshold) > STEP / 2:
            self.state.set_pixel(change["new"])
            self._draw()

    def _draw(self) -> None:
        from ad_core.inspector import find_regions
        from ad_core.viz import mask_outline

        s = self.state
        source = "pixel threshold from the test masks" if s.has_pixel_keys else "no masks: the image threshold's scale"
        ious, cards = [], []
        for result, truth in zip(self.results, self.masks, strict=True):
            full = result.map_at_image()
            mask = full >= s.pixel_threshold
            n = len(find_regions(full, s.pixel_threshold))
            if truth is not None:
                ious.append((mask & truth).sum() / max(1, (mask | truth).sum()))
            cards.append(card(thumbnail(mask_outline(result.overlay(), mask), 128), f"{n} region(s)", 128))
        mean_iou = f"; mean IoU with the test masks {np.mean(ious):.2f}" if ious else ""
        self.info.value = (
            f"<small>{html.escape(source)}: {s.pixel_threshold:.6g} (raw {s.pixel_raw:.6g}); "
            f"saved {s.pixel_saved:.6g}{mean_iou}</small>"
        )
        self.cards.children = cards

    def save(self) -> None:
        """Write the pixel threshold into meta.json."""
        try:
            meta = self.state.save_pixel()
        except Exception as exc:
            self.status.error(exc)
            return
        self.status.ok(f"saved pixel_threshold {meta['pixel_threshold']:.6g}")
        self._draw()


# Backends agree to about 1e-6 (normalised); a saved threshold must not sit exactly on a test score.
EDGE_MARGIN = 1e-5


def _off_the_edge(scores: np.ndarray, thr: float, toward_lower: bool) -> float:
    """Move a target threshold off the test score it sits on, keeping every decision on the test set.

    ``threshold_for_target`` answers with the extreme value (a defect's own score, or just above a
    normal image's). Deployed on another runtime, that image could fall on either side. This moves
    the threshold by ``EDGE_MARGIN`` into the open gap (at most half of it), lower for a miss-rate
    target and higher for a false-reject target.
    """
    below, above = scores[scores < thr], scores[scores >= thr]
    if toward_lower:
        return max(thr - EDGE_MARGIN, (below.max() + thr) / 2) if below.size else thr - EDGE_MARGIN
    low = below.max() if below.size else thr
    return min(low + EDGE_MARGIN, (low + above.min()) / 2) if above.size else low + EDGE_MARGIN


def _metrics_html(p: dict) -> str:
    if not p:
        return ""

    def pct(v: float) -> str:
        return "n/a" if v != v else f"{v:.1%}"

    rows = [
        ("precision", pct(p["precision"])),
        ("recall (defects caught)", pct(p["recall"])),
        ("F1", "n/a" if p["f1"] != p["f1"] else f"{p['f1']:.4f}"),
        ("false-reject rate", pct(p["false_reject_rate"])),
        ("miss rate", pct(p["miss_rate"])),
    ]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{v}</b></td></tr>" for k, v in rows)
    matrix = (
        "<table style='border-collapse:collapse;margin-top:6px'>"
        "<tr><td></td><th>flagged</th><th>passed</th></tr>"
        f"<tr><th>anomalous</th><td>{p['tp']}</td><td>{p['fn']}</td></tr>"
        f"<tr><th>normal</th><td>{p['fp']}</td><td>{p['tn']}</td></tr></table>"
    )
    return f"<table>{table}</table>{matrix}"


__all__ = ["PixelPart", "ThresholdExplorer", "ThresholdState"]
