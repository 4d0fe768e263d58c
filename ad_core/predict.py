"""Scoring single images or folders with a trained run (no export needed) through the Inspector."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ad_core.bundle import Bundle
from ad_core.data.images import list_images, read_image
from ad_core.errors import DataError
from ad_core.inspector import Inspection, Inspector


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
    backend: str = "torch",
    device: str = "auto",
    pixel_threshold: float | None = None,
) -> tuple[list[Inspection], list[tuple[str, str]]]:
    """Score images; returns one :class:`Inspection` per image and ``(file, reason)`` per unreadable file.

    A thin caller of :class:`ad_core.inspector.Inspector` (torch backend by default: no export is needed).

    Args:
        run: run directory, bundle folder, engine file or a loaded :class:`Bundle`.
        inputs: image files and/or folders.
        threshold: normalised decision threshold (0-1); default meta.json's ``image_threshold``.
        batch_size: images per forward pass.
        backend: the runtime backend (see :func:`ad_core.runtime.open_scorer`).
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        pixel_threshold: normalised pixel threshold (0-1) for the defect mask and regions; default meta.json's.
    """
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise DataError(f"--threshold {threshold}: the normalised threshold must be between 0 and 1")
    inspector = Inspector.open(run, backend, threshold=threshold, device=device, pixel_threshold=pixel_threshold)
    results: list[Inspection] = []
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
        if images:
            results.extend(inspector.batch(images, names))
    return results, skipped


def save_predictions(results: list[Inspection], out: str | Path) -> Path:
    """``predictions.csv`` (seed columns plus defect regions), overlays with the defects outlined, and masks."""
    import csv
    import io

    import numpy as np

    from ad_core.fileio import write_bytes_atomic
    from ad_core.viz import mask_outline, save_png

    out = Path(out)
    rows = []
    for r in results:
        rows.append(r.row(regions=True))
        stem = Path(r.file).stem
        mask = r.mask()
        save_png(mask_outline(r.overlay(), mask), out / f"{stem}_overlay.png")
        save_png(mask.astype(np.uint8) * 255, out / f"{stem}_mask.png")
    buf = io.StringIO()
    fields = ["file", "raw_score", "normalized_score", "decision", "defects", "defect_area", "regions"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(out / "predictions.csv", buf.getvalue().encode())
    return out / "predictions.csv"
