"""Retraining on new normal images (seed ``retrain.py``; runs on the PC or the Jetson).

* PatchCore rebuilds its memory bank from the new images, or with ``load_bank`` keeps the old bank
  and adds a coreset of the new patch features (:meth:`PatchCore.update`).
* PaDiM refits its Gaussian, or with ``load_stats`` merges the new images into the old mean and
  covariance exactly (:meth:`Padim.update`).
* EfficientAD and VAE fine-tune from the given weights.

The original bundle is never touched: ``out_dir`` gets ``model.pth``, the array file and its own
meta.json. When the category has test images of both classes the raw score statistics
(automatic threshold, min, max) are refreshed on them; otherwise they are inherited and meta.json
says so.
"""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ad_core.bundle import load_bundle, separate_out_dir, write_bundle
from ad_core.data.layout import resolve_category
from ad_core.fileio import load_npz, sha256, write_bytes_atomic, write_json_atomic
from ad_core.models.registry import flag_owner_error, get_spec
from ad_core.options import TrainOptions
from ad_core.rundir import staged
from ad_core.scoring import best_f1_threshold, image_auroc
from ad_core.train import cuda_memory_errors, history_csv, split_train_val, versions


def retrain(
    model: str,
    pretrained_pth: str | Path | None,
    meta_json: str | Path,
    category: str,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    batch_size: int = 8,
    load_bank: str | Path | None = None,
    load_stats: str | Path | None = None,
    log: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    patience: int = 5,
    stop: threading.Event | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> Path:
    """Retrain a bundle on ``data_root/train/<category>`` into ``out_dir``; return ``out_dir``.

    Args:
        model: ``patchcore``, ``padim``, ``efficientad`` or ``vae``; must match meta.json.
        pretrained_pth: the weights to start from (``model.pth``); None: the ones meta.json names.
        meta_json: the bundle's meta.json (left untouched), or any folder or file that stands for it:
            a run directory, a ``pytorch/``, retrain or engine folder, a ``model.onnx`` / ``model.plan``.
        category: category folder of the new images.
        data_root: data root holding it (seed or MVTec layout); its test split, when present,
            refreshes the raw score statistics.
        out_dir: where the retrained bundle goes; must not be the folder of ``meta_json``.
        epochs: fine-tuning epochs (EfficientAD, VAE).
        batch_size: images per batch (EfficientAD trains with batch 1 regardless, as in the paper).
        load_bank: PatchCore: the bank to extend (else the bank is rebuilt from the new images).
        load_stats: PaDiM: the statistics to merge with (else refit on the new images).
        log: progress bars and ``out_dir/logs/``.
        num_workers: image loading processes.
        seed: random seed.
        patience: early-stopping patience of fine-tuning, in epochs.
        stop: set it to stop (from another thread).
        device: ``auto`` (CUDA when PyTorch sees a GPU), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: fine-tuning precision: ``auto`` (mixed on CUDA), ``fp32`` or ``amp``.
    """
    spec = get_spec(model)
    for flag, value in (("load_bank", load_bank), ("load_stats", load_stats)):
        if value is not None and spec.merge_flag != flag:
            raise flag_owner_error(f"--{flag}", "merge_flag", flag, model)
    cfg = TrainOptions(
        seed=seed,
        batch_size=batch_size,
        num_workers=num_workers,
        epochs=epochs,
        patience=patience,
        progress=log,
        stop=stop,
        device=device,
        precision=precision,
    )
    target = cfg.resolve_device()  # `--device cuda` without a GPU fails here, before anything is written
    meta_path, out = separate_out_dir(meta_json, out_dir, "retrained")
    merge_file = load_bank if load_bank is not None else load_stats
    bundle = load_bundle(meta_path, weights=pretrained_pth, arrays=merge_file, model=model)
    weights_file = Path(pretrained_pth) if pretrained_pth is not None else bundle.path / bundle.meta["weights_pth"]
    ad_model = bundle.model.to(target)
    previous = ad_model.previous_arrays(load_npz(merge_file), bundle.meta) if merge_file is not None else None
    data = resolve_category(data_root, category)
    torch.manual_seed(seed)
    if spec.merge_flag:
        train_paths, val_paths = list(data.train), []
    else:
        train_paths, val_paths = split_train_val(list(data.train), 0.1, seed)
    with cuda_memory_errors(ad_model, batch_size, "retraining"):
        info = ad_model.update(train_paths, val_paths, cfg, previous)
    history = info.pop("history", [])

    meta: dict[str, Any] = {k: v for k, v in bundle.meta.items() if k not in ("sha256", "engine", "retrain")}
    refreshed = _refresh_statistics(ad_model, data, batch_size, num_workers, log)
    if refreshed is None:
        meta["threshold_source"] = f"inherited:{bundle.meta.get('threshold_source', 'unknown')}"
    else:
        meta.update(refreshed.pop("meta"))
    meta.update(
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        versions=versions(),
        **target.meta(),
        retrain={
            "from_meta_json": str(meta_path.resolve()),
            "from_weights": str(weights_file.resolve()),
            "from_weights_sha256": sha256(weights_file),
            "merged_with": str(Path(merge_file).resolve()) if merge_file is not None else None,
            "category": category,
            "data_root": str(data.data_root.resolve()),
            "new_images": len(train_paths) + len(val_paths),
            "epochs": epochs,
            **{k: v for k, v in info.items() if isinstance(v, int | float | str)},
            **(refreshed or {}),
        },
    )
    with staged(out, "merge") as stage:
        write_bundle(ad_model, stage.path, meta)
        if log:
            write_bytes_atomic(stage.path / "logs" / "history.csv", history_csv(history))
            write_json_atomic(stage.path / "logs" / "retrain.json", {"fit": info, "history": history})
    return out


def _refresh_statistics(ad_model, data, batch_size: int, num_workers: int, progress: bool) -> dict | None:
    """Best-F1 threshold, raw min/max and AUROC on the test split, or None without both classes."""
    labels = np.array([s.label for s in data.test])
    if len(labels) == 0 or labels.min() == labels.max():
        return None
    scores, _ = ad_model.score_paths([s.path for s in data.test], batch_size, num_workers, progress, "test scores")
    f1 = best_f1_threshold(labels, scores)
    return {
        "meta": {
            "image_threshold_auto": f1["threshold"],
            "raw_image_min": float(scores.min()),
            "raw_image_max": float(scores.max()),
            "threshold_source": "test_f1",
        },
        "test_image_auroc": image_auroc(labels, scores),
        "test_image_f1": f1["f1"],
        "test_images": len(labels),
    }
