"""Scoring single images or folders with a trained run, before any export exists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ad_core.bundle import Bundle
from ad_core.data.images import list_images, read_image
from ad_core.errors import DataError
from ad_core.runtime import open_scorer


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

    A thin caller of :mod:`ad_core.runtime` (torch backend, so no export is needed).

    Args:
        run: run directory, bundle folder or a loaded :class:`Bundle`.
        inputs: image files and/or folders.
        threshold: normalised decision threshold (0-1); default meta.json's ``image_threshold``.
        batch_size: images per forward pass.
    """
    scorer = open_scorer(run, backend="torch")
    thr = scorer.image_threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise DataError(f"--threshold {thr}: the normalised threshold must be between 0 and 1")
    results: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    paths = expand_inputs(inputs)
    for start in range(0, len(paths), batch_size):
        images, names = [], []
        for p in paths[start : start + batch_size]:
            try:
                images.append(read_image(p))
                names.append(str(p))
            except DataError as exc:
                skipped.append((str(p), str(exc)))
        if not images:
            continue
        out = scorer(images, thr)
        for i, name in enumerate(names):
            results.append(
                Prediction(
                    name, float(out.raw_score[i]), float(out.score[i]), bool(out.is_anomaly[i]), out.anomaly_map[i]
                )
            )
    return results, skipped
