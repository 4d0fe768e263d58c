"""Performance test (seed 000 step 4): AUROC, best F1, automatic threshold, predictions and pictures."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from ad_core.bundle import PIXEL_KEYS, load_bundle, pixel_threshold_of, write_meta
from ad_core.data.images import read_image, read_mask
from ad_core.data.layout import resolve_category
from ad_core.fileio import write_bytes_atomic, write_json_atomic
from ad_core.filters import resize_map
from ad_core.rundir import PREDICTION_FIELDS, RunDir, staged
from ad_core.scoring import best_f1_threshold, confusion, image_auroc, normalize
from ad_core.viz import (
    mask_outline,
    overlay,
    pr_curve_plot,
    reconstruction_comparison,
    roc_curve_plot,
    save_png,
    score_boxplot,
    score_histogram,
)

MAX_PIXELS_FOR_AUROC = 20_000_000


def _pixels(maps: np.ndarray, mask_paths: list[Path | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat map values and mask labels at model resolution (normal images: all negative), sampled if huge."""
    size = maps.shape[1:]
    masks = np.stack([read_mask(p, size) if p is not None else np.zeros(size, bool) for p in mask_paths])
    if not masks.any() or masks.all():
        return None
    flat_maps, flat_masks = maps.reshape(-1), masks.reshape(-1)
    if flat_maps.size > MAX_PIXELS_FOR_AUROC:
        idx = np.random.default_rng(0).choice(flat_maps.size, MAX_PIXELS_FOR_AUROC, replace=False)
        flat_maps, flat_masks = flat_maps[idx], flat_masks[idx]
    return flat_maps, flat_masks


def pixel_auroc(maps: np.ndarray, mask_paths: list[Path | None]) -> float | None:
    """Pixel AUROC over all test images at model resolution (normal images count as all-negative)."""
    pixels = _pixels(maps, mask_paths)
    return None if pixels is None else float(roc_auc_score(pixels[1], pixels[0]))


def pixel_calibration(maps: np.ndarray, mask_paths: list[Path | None]) -> dict[str, Any] | None:
    """Seed 003's pixel-level adaptive threshold: the raw map value with the best pixel F1, and the maps' min/max.

    None when the test images have no masks (the seed then falls back to the image threshold).
    """
    pixels = _pixels(maps, mask_paths)
    if pixels is None:
        return None
    f1 = best_f1_threshold(pixels[1], pixels[0])
    return {
        "pixel_threshold_auto": f1["threshold"],
        "raw_pixel_min": float(maps.min()),
        "raw_pixel_max": float(maps.max()),
        "pixel_f1": f1["f1"],
        "pixel_auroc": float(roc_auc_score(pixels[1], pixels[0])),
    }


def _predictions_csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(PREDICTION_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _save_pictures(out: Path, samples, norm_maps, threshold: float, progress: bool) -> None:
    """Overlay with the predicted defect outlined, and the predicted mask, per image (pixel-normalised maps).

    Written by a few threads (decoding, resizing and PNG encoding release the GIL) at a fast PNG level:
    about 5x faster than one by one at PIL's default on 2 cores (bench/bench_pictures.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(pair) -> None:
        sample, norm_map = pair
        rgb = read_image(sample.path)
        sub = "anomaly" if sample.label else "normal"
        small = np.asarray(norm_map, np.float32)
        pred = resize_map(small, rgb.shape[1], rgb.shape[0]) >= threshold
        stem = sample.path.stem if sample.defect in {"good", "anomaly"} else f"{sample.defect}_{sample.path.stem}"
        save_png(mask_outline(overlay(rgb, small), pred), out / "images" / sub / f"{stem}_overlay.png")
        save_png(pred.astype(np.uint8) * 255, out / "images" / sub / f"{stem}_mask.png")

    pairs = list(zip(samples, norm_maps, strict=True))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(one, pairs), total=len(pairs), desc="pictures", disable=not progress, leave=False):
            pass


def evaluate(
    run: str | Path,
    data_root: str | Path | None = None,
    save_path: str | Path | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    save_images: bool = True,
    progress: bool = True,
    mlflow: str | bool | None = None,
    device: str = "auto",
    on_progress=None,
) -> dict[str, Any]:
    """Test a trained run on ``data/test/<CATEGORY>`` and record the automatic threshold.

    ``on_progress(stage, done, total)``: the scoring's progress (the panels' bars).
    ``device``: where the test images are scored (``auto``: CUDA when PyTorch sees a GPU); always
    in fp32, so the threshold set here is the one the fp32 engine applies.

    Writes ``predictions.csv``, ``metrics.json``, ``score_histogram.png`` and per-image overlays
    and predicted masks into ``<run>/test_result/`` (or ``save_path``, seed 003 ``--save-path``),
    replacing a previous result as a whole, and updates meta.json's ``image_threshold_auto``,
    ``raw_image_min`` and ``raw_image_max``. Where every anomalous test image has a mask, the pixel-level
    F1 threshold is computed too (seed 003) and stored as ``pixel_threshold_auto``, ``raw_pixel_min``,
    ``raw_pixel_max`` (and ``pixel_threshold``, normalised, default 0.5); maps are then normalised with
    these and the predicted masks in ``test_result/`` are cut at the pixel threshold. Without masks the
    maps fall back to the image keys, as the seed does, and the report says so. The seed 004 plots (``boxplot.png``,
    ``roc_curve.png``, ``pr_curve.png``, and for the VAE ``reconstruction_comparison.png``) go
    beside them. With ``mlflow`` the metrics and those files are logged to MLflow, into the
    training's run when it is in that store.
    """
    if mlflow:
        from ad_core.tracking import client

        client(mlflow)  # an unreachable store fails here, before anything is written
    from ad_core.device import resolve

    target = resolve(device, "fp32")  # `--device cuda` without a GPU fails here, before anything is written
    bundle = load_bundle(run)
    bundle.model.to(target)
    meta = dict(bundle.meta)
    data = resolve_category(data_root or meta.get("data_root", "data"), meta["category"], require_test=True)
    samples = data.test
    labels = np.array([s.label for s in samples])
    from ad_core.train import cuda_memory_errors

    with cuda_memory_errors(bundle.model, batch_size, "testing"):
        scores, maps = bundle.model.score_paths(
            [s.path for s in samples], batch_size, num_workers, progress, "testing", on_progress
        )
    f1 = best_f1_threshold(labels, scores)
    threshold_raw, raw_min, raw_max = f1["threshold"], float(scores.min()), float(scores.max())
    image_threshold = float(meta.get("image_threshold", 0.5))
    normalized = normalize(scores, threshold_raw, raw_min, raw_max)
    predictions = normalized >= image_threshold
    report: dict[str, Any] = {
        "model": meta["model"],
        "category": meta["category"],
        "n_normal": int((labels == 0).sum()),
        "n_anomaly": int((labels == 1).sum()),
        "image_auroc": image_auroc(labels, scores),
        "image_f1": f1["f1"],
        "precision": f1["precision"],
        "recall": f1["recall"],
        "image_threshold_auto": threshold_raw,
        "raw_image_min": raw_min,
        "raw_image_max": raw_max,
        "image_threshold": image_threshold,
        "confusion": confusion(labels, predictions),
        "device": target.name,
        "score_stats": score_stats(scores, labels),
    }
    pixel = pixel_calibration(maps, [s.mask for s in samples]) if data.has_masks else None
    report["pixel_auroc"] = pixel["pixel_auroc"] if pixel else None
    if pixel is not None:
        pixel_keys = {k: pixel[k] for k in PIXEL_KEYS}
        report.update(pixel_keys, pixel_f1=pixel["pixel_f1"], pixel_threshold_source="test_f1")
    else:
        pixel_keys = {}
        report["pixel_threshold_source"] = "image"
        report["pixel_threshold_note"] = (
            "no pixel masks for every anomalous test image: the maps are normalised with the image threshold "
            "(as the seed does); add masks to test/<CATEGORY>/masks/ for a pixel threshold"
        )
    rows = [
        {
            "file": str(s.path),
            "label": "anomaly" if s.label else "normal",
            "raw_score": f"{raw:.6g}",
            "normalized_score": f"{norm:.6f}",
            "prediction": "anomaly" if pred else "normal",
        }
        for s, raw, norm, pred in zip(samples, scores, normalized, predictions, strict=True)
    ]
    out = Path(save_path) if save_path else RunDir.of(bundle.path).test_result
    with staged(out, "replace") as stage:
        write_bytes_atomic(stage.path / "predictions.csv", _predictions_csv(rows))
        write_json_atomic(stage.path / "metrics.json", report)
        _save_plots(stage.path, bundle, samples, scores, labels, threshold_raw, report)
        if save_images:
            if pixel_keys:
                norm_maps = normalize(maps, *(pixel_keys[k] for k in PIXEL_KEYS))
            else:
                norm_maps = normalize(maps, threshold_raw, raw_min, raw_max)
            _save_pictures(stage.path, samples, norm_maps, pixel_threshold_of(meta), progress)
    for key in PIXEL_KEYS:
        meta.pop(key, None)  # a test without masks must not leave an older pixel calibration behind
    meta.update(
        image_threshold_auto=threshold_raw,
        raw_image_min=raw_min,
        raw_image_max=raw_max,
        threshold_source="test_f1",
        **pixel_keys,
        pixel_threshold=pixel_threshold_of(meta),
        pixel_threshold_source=report["pixel_threshold_source"],
        test_metrics={k: report[k] for k in ("image_auroc", "image_f1", "pixel_auroc", "n_normal", "n_anomaly")},
    )
    write_meta(bundle.path, meta)
    report["output"] = str(out)
    if mlflow:
        from ad_core.tracking import log_test

        report["mlflow"] = log_test(report, meta, bundle.path, mlflow)
        if not meta.get("mlflow"):
            meta["mlflow"] = report["mlflow"]
            write_meta(bundle.path, meta)
    return report


def score_stats(scores: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min, median and max of the raw scores per class (seed 004 metrics)."""
    out = {}
    for label, name in ((0, "normal"), (1, "anomaly")):
        s = np.asarray(scores, np.float64)[np.asarray(labels) == label]
        if s.size:
            out[name] = {
                "mean": float(s.mean()),
                "std": float(s.std()),
                "min": float(s.min()),
                "median": float(np.median(s)),
                "max": float(s.max()),
            }
    return out


def _save_plots(out: Path, bundle, samples, scores, labels, threshold: float, report: dict[str, Any]) -> None:
    title = f"{report['model']} / {report['category']}"
    score_histogram(
        scores, labels, threshold, out / "score_histogram.png", f"{title}: AUROC {report['image_auroc']:.3f}"
    )
    score_boxplot(scores, labels, threshold, out / "boxplot.png", f"{title}: scores per class")
    roc_curve_plot(scores, labels, threshold, out / "roc_curve.png", f"{title}: ROC")
    pr_curve_plot(scores, labels, threshold, out / "pr_curve.png", f"{title}: precision-recall")
    if hasattr(bundle.model, "reconstruct"):
        order = np.argsort(scores)
        picks = [int(order[0]), int(order[len(order) // 2]), int(order[-1])]
        chosen = [samples[i] for i in picks]
        images, recons, errors = bundle.model.reconstruct([s.path for s in chosen])
        names = [
            f"{'anomaly' if s.label else 'normal'} {s.path.name}\nscore {scores[i]:.4g}"
            for s, i in zip(chosen, picks, strict=True)
        ]
        reconstruction_comparison(
            images,
            recons,
            errors,
            names,
            out / "reconstruction_comparison.png",
            f"{title}: lowest, median and highest score",
        )
