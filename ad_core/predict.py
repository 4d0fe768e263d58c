"""Scoring single images or folders with a trained run, before any export exists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ad_core.bundle import Bundle, load_bundle
from ad_core.data.images import list_images, read_image
from ad_core.errors import DataError


@dataclass
class Prediction:
    """One image's result."""

    file: str
    raw_score: float
    normalized_score: float
    is_anomaly: bool
    anomaly_map: np.ndarray  # normalised, model resolution


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given plus the images inside given folders; missing paths are an error."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(list_images(p))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return out


def predict(
    run: str | Path | Bundle,
    inputs: Iterable[str | Path],
    threshold: float | None = None,
    batch_size: int = 8,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Score images; returns the predictions and ``(file, reason)`` for each unreadable file.

    Args:
        run: run directory, bundle folder or a loaded :class:`Bundle`.
        inputs: image files and/or folders.
        threshold: normalised decision threshold (0-1); default meta.json's ``image_threshold``.
        batch_size: images per forward pass.
    """
    bundle = run if isinstance(run, Bundle) else load_bundle(run)
    thr = bundle.image_threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise DataError(f"--threshold {thr}: the normalised threshold must be between 0 and 1")
    pre = bundle.preprocess
    results: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    paths = expand_inputs(inputs)
    for start in range(0, len(paths), batch_size):
        tensors, names = [], []
        for p in paths[start : start + batch_size]:
            try:
                tensors.append(pre(read_image(p)))
                names.append(str(p))
            except DataError as exc:
                skipped.append((str(p), str(exc)))
        if not tensors:
            continue
        out = bundle.model.predict(torch.stack(tensors))
        raw = out.pred_score.float().numpy()
        norm = np.atleast_1d(bundle.normalize(raw))
        maps = bundle.normalize(out.anomaly_map.float().numpy()[:, 0])
        for name, r, n, m in zip(names, raw, norm, maps, strict=True):
            results.append(Prediction(name, float(r), float(n), bool(n >= thr), m))
    return results, skipped
