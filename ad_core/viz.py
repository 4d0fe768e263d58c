"""Pictures for people: heat-map overlays, predicted masks and score histograms."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ad_core.fileio import PNG_COMPRESS_LEVEL, write_bytes_atomic
from ad_core.filters import resize_map


@functools.cache
def _jet_lut() -> np.ndarray:
    """The ``jet`` colour map as a 256 x 3 uint8 table (built once)."""
    return (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over an RGB uint8 image with the ``jet`` colour map.

    The map is quantised to 256 colours and blended in integers (8-bit fixed point): about 15x
    faster than a float colour map at 640 x 480, which matters for a camera stream.
    """
    heat = resize_map(heat, rgb.shape[1], rgb.shape[0])
    index = (np.clip(heat, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    colour = _jet_lut()[index].astype(np.uint16)
    a = round(alpha * 256)
    return ((rgb.astype(np.uint16) * (256 - a) + colour * a + 128) >> 8).astype(np.uint8)


def mask_outline(rgb: np.ndarray, mask: np.ndarray, colour=(255, 0, 0)) -> np.ndarray:
    """Draw the outline of a boolean mask in ``colour`` on a copy of ``rgb`` (same size)."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    out = rgb.copy()
    out[mask & ~inner] = colour
    return out


def save_png(arr: np.ndarray, path: Path) -> None:
    """Save a uint8 array as PNG (fast, lossless compression)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, compress_level=PNG_COMPRESS_LEVEL)


def score_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    path: Path,
    title: str,
    xlabel: str = "raw anomaly score",
) -> None:
    """Histogram of normal vs anomalous scores with the threshold marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    bins = np.histogram_bin_edges(scores, bins=30)
    for label, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        chosen = scores[labels == label]
        ax.hist(chosen, bins=bins, alpha=0.6, label=f"{name} (n={len(chosen)})", color=colour)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out, save atomically as PNG and close a matplotlib figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _split(scores, labels) -> list[tuple[str, np.ndarray, str]]:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, int)
    return [(name, scores[labels == lab], colour) for lab, name, colour in CLASSES]


CLASSES = ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red"))


def score_boxplot(scores, labels, threshold: float, path: Path, title: str, ylabel: str = "raw anomaly score") -> None:
    """Box plot of the scores per class (seed 004 ``boxplot.png``) with the threshold marked."""
    groups = [(n, s, c) for n, s, c in _split(scores, labels) if len(s)]
    fig, ax = plt.subplots(figsize=(5.0, 4.2), dpi=100)
    box = ax.boxplot([s for _, s, _ in groups], patch_artist=True, widths=0.5)
    for patch, (_, _, colour) in zip(box["boxes"], groups, strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.5)
    rng = np.random.default_rng(0)
    for i, (_, s, colour) in enumerate(groups, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(s)), s, s=10, color=colour, zorder=3)
    ax.set_xticks(range(1, len(groups) + 1), [f"{n}\n(n={len(s)})" for n, s, _ in groups])
    ax.axhline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("test class")
    ax.set_title(title)
    ax.legend(loc="best")
    save_figure(fig, path)


def roc_curve_plot(scores, labels, threshold: float, path: Path, title: str) -> None:
    """ROC curve with its AUROC, the operating point at ``threshold`` marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels, int)
    scores = np.asarray(scores, np.float64)
    fpr, tpr, _ = roc_curve(labels, scores)
    pred = scores >= threshold
    op = (float((pred & (labels == 0)).sum() / max(1, (labels == 0).sum())), float(pred[labels == 1].mean()))
    fig, ax = plt.subplots(figsize=(4.8, 4.5), dpi=100)
    ax.plot(fpr, tpr, color="tab:red", label=f"AUROC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.scatter(*op, color="black", zorder=3, label=f"threshold {threshold:.4g}")
    ax.set_xlabel("false positive rate (normal images flagged)")
    ax.set_ylabel("true positive rate (defects caught)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def pr_curve_plot(scores, labels, threshold: float, path: Path, title: str) -> None:
    """Precision-recall curve with its average precision, the operating point at ``threshold`` marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(labels, int)
    scores = np.asarray(scores, np.float64)
    precision, recall, _ = precision_recall_curve(labels, scores)
    pred = scores >= threshold
    op_recall = float(pred[labels == 1].mean())
    op_precision = float((pred & (labels == 1)).sum() / max(1, pred.sum()))
    fig, ax = plt.subplots(figsize=(4.8, 4.5), dpi=100)
    ax.plot(recall, precision, color="tab:red", label=f"AP {average_precision_score(labels, scores):.3f}")
    ax.axhline(labels.mean(), color="grey", linestyle=":", label="chance")
    ax.scatter(op_recall, op_precision, color="black", zorder=3, label=f"threshold {threshold:.4g}")
    ax.set_xlabel("recall (defects caught)")
    ax.set_ylabel("precision (flagged images that are defects)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower left")
    save_figure(fig, path)


def loss_curves(history: list[dict], path: Path, title: str) -> None:
    """Save :func:`loss_figure` as PNG."""
    save_figure(loss_figure(history, title), path)


def loss_figure(history: list[dict], title: str):
    """Per-epoch training and validation losses (log scale when they span a wide range)."""
    epochs = [row["epoch"] for row in history]
    keys = [k for k in history[0] if k != "epoch"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for k in keys:
        ax.plot(epochs, [row[k] for row in history], marker="o", markersize=3, label=k)
    values = np.array([row[k] for row in history for k in keys], np.float64)
    positive = values[values > 0]
    if positive.size == values.size and positive.size and positive.max() / positive.min() > 50:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return fig


def reconstruction_comparison(
    images: list[np.ndarray],
    recons: list[np.ndarray],
    errors: list[np.ndarray],
    names: list[str],
    path: Path,
    title: str,
) -> None:
    """Seed 004 ``reconstruction_comparison.png``: input, reconstruction and error map per row."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), dpi=100, squeeze=False)
    for row, (img, rec, err, name) in enumerate(zip(images, recons, errors, names, strict=True)):
        for col, (arr, label) in enumerate(((img, "input"), (rec, "reconstruction"), (err, "squared error"))):
            ax = axes[row][col]
            ax.imshow(arr, cmap="jet" if arr.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


def optimisation_history(values: list[float | None], path: Path, title: str, ylabel: str) -> None:
    """Save :func:`history_figure` as PNG."""
    save_figure(history_figure(values, title, ylabel), path)


def history_figure(values: list[float | None], title: str, ylabel: str):
    """Objective per trial (pruned/failed trials as crosses at the bottom) and the running best."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    xs = np.arange(len(values))
    done = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
    if done:
        dx, dv = zip(*done, strict=True)
        ax.scatter(dx, dv, color="tab:blue", label="finished trial", zorder=3)
        ax.step(dx, np.maximum.accumulate(dv), where="post", color="tab:red", label="best so far")
        other = [x for x, v in zip(xs, values, strict=True) if v is None]
        if other:
            ax.scatter(other, [min(dv)] * len(other), marker="x", color="grey", label="pruned / failed")
        # below the axes (tight_layout makes room for it): a legend inside hid a trial's point
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def selection_plot(ranked: list[dict], path: Path, title: str) -> None:
    """Proxy AUROC of each candidate of ``ad-core select`` (best first; the chosen one in red), as PNG."""
    # room for the title and the axis label as well as the bars: with one candidate, a figure sized
    # by the bars alone was too short to lay out
    fig, ax = plt.subplots(figsize=(6.4, 1.4 + 0.42 * len(ranked)), dpi=100)
    names = [r["candidate"] for r in ranked][::-1]
    values = [r["auroc"] for r in ranked][::-1]
    colours = ["tab:blue"] * (len(ranked) - 1) + ["tab:red"]
    ax.barh(names, values, color=colours)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    low = min(values, default=0.5)
    ax.set_xlim(max(0.0, min(0.5, low - 0.05)), 1.05)
    ax.set_xlabel("proxy AUROC (held-out normals vs synthetic anomalies)")
    ax.set_title(title)
    save_figure(fig, path)
