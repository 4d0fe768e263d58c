"""Pictures for people: heat-map overlays, predicted masks and score histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from PIL import Image


def overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (any size) over an RGB uint8 image with the ``jet`` colour map."""
    h, w = rgb.shape[:2]
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat.astype(np.float32)).resize((w, h), Image.BILINEAR))
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    out = (1 - alpha) * rgb.astype(np.float32) / 255.0 + alpha * colour
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def mask_outline(rgb: np.ndarray, mask: np.ndarray, colour=(255, 0, 0)) -> np.ndarray:
    """Draw the outline of a boolean mask in ``colour`` on a copy of ``rgb`` (same size)."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    out = rgb.copy()
    out[mask & ~inner] = colour
    return out


def save_png(arr: np.ndarray, path: Path) -> None:
    """Save a uint8 array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
