"""Training into the seed's run directory ``models/<Model>/<CATEGORY>/<YYYYMMDD_HHMMSS>/``.

The run is assembled in a hidden ``.<stamp>.partial-*`` folder next to its final place and
renamed only when complete, so a crash or Ctrl-C leaves nothing that looks finished, and an
existing run is never overwritten (a second run in the same second gets a ``_2`` suffix).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ad_core.data.layout import resolve_category
from ad_core.fileio import save_npz_atomic, save_torch_atomic, sha256, write_bytes_atomic, write_json_atomic
from ad_core.models import AnomalyModel, FitConfig, create_model, get_spec

RUN_SUBDIRS = ("pytorch", "checkpoint", "logs", "param", "test_result")


def versions() -> dict[str, str]:
    """Versions of the packages a bundle depends on."""
    import anomalib
    import timm

    from ad_core import __version__

    return {
        "ad_inspect": __version__,
        "torch": torch.__version__,
        "anomalib": anomalib.__version__,
        "timm": timm.__version__,
    }


def split_train_val(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Hold out a deterministic fraction of normal images for validation (none when fewer than 5)."""
    if len(paths) < 5 or val_fraction <= 0:
        return list(paths), []
    n_val = max(1, round(len(paths) * val_fraction))
    order = np.random.default_rng(seed).permutation(len(paths))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def history_csv(history: list[dict[str, Any]]) -> bytes:
    """Per-epoch history rows as CSV bytes."""
    buf = io.StringIO()
    if history:
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return buf.getvalue().encode()


def _finalise(tmp: Path, parent: Path, stamp: str) -> Path:
    for n in range(1, 1000):
        final = parent / (stamp if n == 1 else f"{stamp}_{n}")
        if final.exists():
            continue
        try:
            os.rename(tmp, final)
        except OSError:
            continue
        return final
    raise RuntimeError(f"could not find a free run directory name under {parent}")


def write_bundle(model: AnomalyModel, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write model.pth, the array file and meta.json (with sha256 of each artifact) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(folder / "model.pth", model.weights_state())
    digests = {"model.pth": sha256(folder / "model.pth")}
    meta = {**meta, "weights_pth": "model.pth"}
    arrays = model.artifacts()
    if arrays is not None and model.artifact_file:
        save_npz_atomic(folder / model.artifact_file, arrays)
        digests[model.artifact_file] = sha256(folder / model.artifact_file)
        meta[model.artifact_key] = model.artifact_file
    meta["sha256"] = digests
    write_json_atomic(folder / "meta.json", meta)
    return meta


def build_meta(model: AnomalyModel, category: str, data_root: Path, scores: np.ndarray, extra: dict) -> dict[str, Any]:
    """meta.json content: the seed 001 keys for the model first, then ours."""
    spec = get_spec(model.name)
    threshold = float(scores.max())
    meta: dict[str, Any] = {
        **model.meta(),
        "image_size": model.image_size,
        "weights_pth": "model.pth",
        "image_threshold": 0.5,
        "image_threshold_auto": threshold,
        "raw_image_min": float(scores.min()),
        "raw_image_max": float(scores.max()),
        "threshold_source": "validation_max",
        "model": spec.name,
        "category": category,
        "data_root": str(data_root.resolve()),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "preprocessing": model.preprocess.to_dict(),
        "versions": versions(),
        **{k: v for k, v in model.hparams.items() if k not in model.meta() and k != "image_size"},
        **extra,
    }
    return meta


def train(
    model: str,
    category: str,
    data_root: str | Path = "data",
    models_root: str | Path = "models",
    *,
    seed: int = 0,
    batch_size: int = 8,
    num_workers: int = 0,
    epochs: int | None = None,
    patience: int = 5,
    val_fraction: float = 0.1,
    weights: str | Path | None = None,
    allow_download: bool | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    **hparams: Any,
) -> Path:
    """Train ``model`` on ``data_root``'s normal images of ``category``; return the run directory.

    Hyperparameters (``image_size``, ``backbone``, ``coreset_ratio``, ...) are validated against
    the registry before any work starts.
    """
    data = resolve_category(data_root, category)
    ad_model = create_model(model, **hparams)
    torch.manual_seed(seed)
    cfg = FitConfig(batch_size, num_workers, epochs, patience, seed, progress, weights, allow_download, on_epoch)
    if stop is not None:
        cfg.stop = stop
    train_paths, val_paths = split_train_val(data.train, val_fraction, seed)
    parent = Path(models_root) / ad_model.dir_name / category
    parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{stamp}.partial-"))
    try:
        for sub in RUN_SUBDIRS:
            (tmp / sub).mkdir()
        ad_model.prepare_pretrained(cfg)
        fit_result = ad_model.fit(train_paths, val_paths, cfg)
        history = fit_result.pop("history", [])
        calib = val_paths or train_paths
        scores, _ = ad_model.score_paths(calib, batch_size, num_workers, progress, "validation scores")
        extra = {
            "train_images": len(train_paths),
            "val_images": len(val_paths),
            "seed": seed,
            **ad_model.fit_info,
            "fit": fit_result,
        }
        meta = build_meta(ad_model, category, data.data_root, scores, extra)
        meta = write_bundle(ad_model, tmp / "pytorch", meta)
        save_torch_atomic(
            tmp / "checkpoint" / "best.ckpt",
            {
                "model": ad_model.name,
                "hparams": dict(ad_model.hparams),
                "state_dict": ad_model.weights_state(),
                "history": history,
                "fit": fit_result,
            },
        )
        write_bytes_atomic(
            tmp / "param" / "params.yaml", yaml.safe_dump(dict(ad_model.hparams), sort_keys=False).encode()
        )
        write_bytes_atomic(tmp / "logs" / "history.csv", history_csv(history))
        write_json_atomic(tmp / "logs" / "train.json", {"fit": fit_result, "validation_scores": scores.tolist()})
        return _finalise(tmp, parent, stamp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
