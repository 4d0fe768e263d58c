"""Threshold explorer: score histograms, a threshold on raw and normalised axes, live rates, Save."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w
import numpy as np

from ad_core.bundle import bundle_dir, normalize_with, read_meta, save_threshold
from ad_core.rundir import RunDir
from ad_core.scoring import denormalize, operating_point, threshold_for_target
from jupyter_ext._common import LAYOUT_WIDE, STYLE, Status, card, png_bytes, thumbnail

TARGETS = {"miss rate at most (%)": "miss", "false-reject rate at most (%)": "false_reject"}


class ThresholdExplorer(w.VBox):
    """Load a tested run; move the threshold and watch precision, recall, F1, rates and the confusion matrix."""

    def __init__(self, run: str | Path | None = None, gallery_size: int = 12) -> None:
        self.run = w.Text(value=str(run or ""), description="tested run", style=STYLE, layout=LAYOUT_WIDE)
        self.load_button = w.Button(description="Load", icon="folder-open")
        self.slider = w.FloatSlider(
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.0001,
            readout_format=".4f",
            continuous_update=True,
            description="threshold (normalised)",
            style=STYLE,
            layout=LAYOUT_WIDE,
        )
        self.raw = w.FloatText(description="threshold (raw)", style=STYLE)
        self.plot = w.Image(format="png", layout=w.Layout(max_width="600px"))
        self.metrics = w.HTML()
        self.target_kind = w.Dropdown(
            options=list(TARGETS), description="set by target", style=STYLE, layout=w.Layout(width="360px")
        )
        self.target_value = w.BoundedFloatText(value=5.0, min=0.0, max=100.0, step=0.5, layout=w.Layout(width="90px"))
        self.target_button = w.Button(description="Set", icon="crosshairs")
        self.save_button = w.Button(
            description="Save to meta.json", button_style="success", icon="save", layout=w.Layout(width="auto")
        )
        self.gallery = w.VBox()
        self.status = Status()
        self.gallery_size = gallery_size
        self.meta: dict | None = None
        self.saved = 0.5
        self.files: list[str] = []
        self.labels = np.zeros(0, bool)
        self.scores = np.zeros(0)
        self.normalized = np.zeros(0)
        self._syncing = False
        super().__init__(
            [
                w.HBox([self.run, self.load_button]),
                self.slider,
                self.raw,
                w.HBox([self.target_kind, self.target_value, self.target_button, self.save_button]),
                self.status,
                w.HBox([self.plot, self.metrics]),
                self.gallery,
            ]
        )
        self.load_button.on_click(lambda _: self.load())
        self.slider.observe(lambda _: self._from_slider(), names="value")
        self.raw.observe(lambda _: self._from_raw(), names="value")
        self.target_button.on_click(lambda _: self.set_by_target())
        self.save_button.on_click(lambda _: self.save())
        self._enable(False)
        if run:
            self.load()

    def _enable(self, on: bool) -> None:
        for widget in (self.slider, self.raw, self.target_button, self.save_button):
            widget.disabled = not on

    # -- loading -----------------------------------------------------------------------------------
    def load(self, run: str | Path | None = None) -> bool:
        """Read a run's meta.json and ``test_result/predictions.csv``; False (and a message) if it cannot."""
        if run is not None:
            self.run.value = str(run)
        try:
            folder = bundle_dir(self.run.value)
            meta = read_meta(folder)
            run = RunDir.of(folder)
            run_dir, rows = run.path, run.predictions()
        except Exception as exc:
            self.meta = None
            self._enable(False)
            self.status.error(exc)
            return False
        self.meta, self.run_dir = meta, run_dir
        self.files = [r["file"] for r in rows]
        self.labels = np.array([r["label"] == "anomaly" for r in rows])
        self.scores = np.array([float(r["raw_score"]) for r in rows])
        self.normalized = np.asarray(normalize_with(meta, self.scores), np.float64)
        self.saved = float(meta.get("image_threshold", 0.5))
        self._enable(True)
        self.status.ok(
            f"{meta['model']} / {meta['category']}: {int((~self.labels).sum())} normal and "
            f"{int(self.labels.sum())} anomalous test images; saved threshold {self.saved:.4f}"
        )
        self.set_threshold(self.saved)
        self.update()
        return True

    # -- the threshold -----------------------------------------------------------------------------
    def raw_of(self, normalized: float) -> float:
        """The raw score that a normalised threshold corresponds to."""
        m = self.meta
        return denormalize(normalized, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"])

    def set_threshold(self, normalized: float) -> None:
        """Move the threshold (slider, raw field, plot and metrics follow)."""
        self.slider.value = float(np.clip(normalized, 0.0, 1.0))

    def _from_slider(self) -> None:
        if self._syncing or self.meta is None:
            return
        self._syncing = True
        self.raw.value = round(self.raw_of(self.slider.value), 6)
        self._syncing = False
        self.update()

    def _from_raw(self) -> None:
        if self._syncing or self.meta is None:
            return
        self._syncing = True
        self.slider.value = float(normalize_with(self.meta, self.raw.value))
        self._syncing = False
        self.update()

    def point(self) -> dict:
        """Precision, recall, F1, false-reject and miss rates and the confusion counts at the current threshold."""
        return operating_point(self.labels, self.normalized, self.slider.value)

    def set_by_target(self) -> None:
        """Choose the threshold that meets the chosen rate with the least cost to the other one."""
        kind, value = TARGETS[self.target_kind.value], self.target_value.value / 100.0
        try:
            if kind == "miss":
                thr = threshold_for_target(self.labels, self.normalized, max_miss_rate=value)
            else:
                thr = threshold_for_target(self.labels, self.normalized, max_false_reject=value)
        except ValueError as exc:
            self.status.error(str(exc))
            return
        self.set_threshold(_off_the_edge(self.normalized, thr, toward_lower=kind == "miss"))
        p = self.point()
        self.status.ok(
            f"threshold {self.slider.value:.4f}: miss rate {p['miss_rate']:.1%}, false-reject rate "
            f"{p['false_reject_rate']:.1%}"
        )

    def save(self) -> None:
        """Write the threshold into meta.json (atomically, with who and when)."""
        if self.meta is None:
            return
        try:
            meta = save_threshold(self.run_dir, self.slider.value, note="threshold explorer")
        except Exception as exc:
            self.status.error(exc)
            return
        self.meta, self.saved = meta, float(meta["image_threshold"])
        entry = meta["threshold_history"][-1]
        self.status.ok(
            f"saved image_threshold {entry['image_threshold']:.4f} (raw {entry['raw']:.6g}) to "
            f"{bundle_dir(self.run_dir) / 'meta.json'} by {entry['by']} at {entry['at']}"
        )
        self.update()

    # -- drawing -----------------------------------------------------------------------------------
    def update(self) -> None:
        """Redraw the histogram, the metrics and the gallery for the current threshold."""
        if self.meta is None:
            return
        p = self.point()
        self.metrics.value = _metrics_html(p)
        self.plot.value = self._histogram()
        self._gallery()

    def _histogram(self) -> bytes:
        import matplotlib.pyplot as plt

        m = self.meta
        span = (m["raw_image_max"] - m["raw_image_min"]) or 1.0
        fig, ax = plt.subplots(figsize=(6.0, 3.4), dpi=90)
        bins = np.histogram_bin_edges(self.scores, bins=30)
        for flag, name, colour in ((False, "normal", "tab:blue"), (True, "anomaly", "tab:red")):
            ax.hist(self.scores[self.labels == flag], bins=bins, alpha=0.6, color=colour, label=name)
        raw = self.raw_of(self.slider.value)
        ax.axvline(raw, color="black", linestyle="--", label=f"threshold {self.slider.value:.3f}")
        if abs(self.saved - self.slider.value) > 1e-9:
            ax.axvline(self.raw_of(self.saved), color="grey", linestyle=":", label=f"saved {self.saved:.3f}")
        ax.set_xlabel("raw anomaly score")
        ax.set_ylabel("test images")
        top = ax.secondary_xaxis(
            "top",
            functions=(
                lambda r: (r - m["image_threshold_auto"]) / span + 0.5,
                lambda n: (n - 0.5) * span + m["image_threshold_auto"],
            ),
        )
        top.set_xlabel("normalised score")
        ax.legend(fontsize=8)
        return png_bytes(fig)

    def changed(self) -> list[int]:
        """Indices of the images whose decision differs between the saved and the current threshold."""
        now = self.normalized >= self.slider.value
        before = self.normalized >= self.saved
        return [int(i) for i in np.flatnonzero(now != before)]

    def _gallery(self) -> None:
        idx = self.changed()
        if not idx:
            self.gallery.children = (
                w.HTML("<small>no image changes side between the saved and this threshold</small>"),
            )
            return
        cards = []
        for i in idx[: self.gallery_size]:
            path = Path(self.files[i])
            sub = "anomaly" if self.labels[i] else "normal"
            overlays = sorted((RunDir(self.run_dir).test_result / "images" / sub).glob(f"*{path.stem}_overlay.png"))
            now = "flagged" if self.normalized[i] >= self.slider.value else "passed"
            picture = overlays[0] if overlays else path
            try:
                png = thumbnail(picture, 128)
            except Exception:
                continue
            cards.append(card(png, f"{sub}, now {now} ({self.normalized[i]:.3f})", 128))
        more = f" (first {self.gallery_size} of {len(idx)})" if len(idx) > self.gallery_size else ""
        title = w.HTML(f"<b>{len(idx)} image(s) change side</b> against the saved threshold{more}")
        self.gallery.children = (title, w.HBox(cards, layout=w.Layout(flex_flow="row wrap")))


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
