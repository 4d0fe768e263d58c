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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ad_core.data.layout import CategoryData, resolve_category
from ad_core.errors import ConfigError
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


@dataclass
class FitJob:
    """Everything a fit needs, validated before any work starts (shared by train and tune)."""

    data: CategoryData
    model: AnomalyModel
    cfg: FitConfig
    train: list[Path]
    val: list[Path]

    def run(self) -> dict[str, Any]:
        """Load pretrained weights and fit on the normal images; return the fit result."""
        self.model.prepare_pretrained(self.cfg)
        return self.model.fit(self.train, self.val, self.cfg)


def prepare_fit(
    model: str,
    category: str,
    data_root: str | Path = "data",
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
    require_test: bool = False,
    **hparams: Any,
) -> FitJob:
    """Resolve the data, build the model (seeded, so a configuration trains the same twice), split train/val."""
    data = resolve_category(data_root, category, require_test=require_test)
    torch.manual_seed(seed)
    ad_model = create_model(model, **hparams)
    cfg = FitConfig(batch_size, num_workers, epochs, patience, seed, progress, weights, allow_download, on_epoch)
    if stop is not None:
        cfg.stop = stop
    train_paths, val_paths = split_train_val(data.train, val_fraction, seed)
    return FitJob(data, ad_model, cfg, train_paths, val_paths)


def _into_existing(tmp: Path, run_dir: Path) -> Path:
    """Swap a finished staging folder in for a run directory that so far holds only ``param/`` (tuning).

    The tuning files are copied into the staging folder first, so neither rename can lose them.
    """
    for f in sorted((run_dir / "param").glob("*")):
        if f.is_file() and not (tmp / "param" / f.name).exists():
            shutil.copy2(f, tmp / "param" / f.name)
    old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
    os.rename(run_dir, old)
    os.rename(tmp, run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return run_dir


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
    run_dir: str | Path | None = None,
    mlflow: str | bool | None = None,
    **hparams: Any,
) -> Path:
    """Train ``model`` on ``data_root``'s normal images of ``category``; return the run directory.

    Hyperparameters (``image_size``, ``backbone``, ``coreset_ratio``, ...) are validated against
    the registry before any work starts. ``run_dir`` names a run directory made by ``ad-core tune``
    (it holds only ``param/``): training then fills that directory, as in the seed's flow. With
    ``mlflow`` (True for the local ``mlruns/`` store, or a tracking URI) parameters, per-epoch
    losses and the ``pytorch/`` bundle are logged to MLflow and meta.json records the run.
    """
    job = prepare_fit(
        model,
        category,
        data_root,
        seed=seed,
        batch_size=batch_size,
        num_workers=num_workers,
        epochs=epochs,
        patience=patience,
        val_fraction=val_fraction,
        weights=weights,
        allow_download=allow_download,
        progress=progress,
        on_epoch=on_epoch,
        stop=stop,
        **hparams,
    )
    ad_model = job.model
    parent = Path(models_root) / ad_model.dir_name / category
    if run_dir is not None:
        run_dir = Path(run_dir)
        if (run_dir / "pytorch").exists():
            raise ConfigError(f"{run_dir} already holds a trained model (pytorch/); train into a new run directory")
        if not run_dir.is_dir():
            raise ConfigError(f"run directory {run_dir} does not exist")
        parent = run_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tracker = None
    if mlflow:
        from ad_core.tracking import Tracker

        tracker = Tracker.start(mlflow, f"{ad_model.dir_name}/{category}", run_name=f"train {ad_model.name}")
        tracker.log_params(
            {
                **ad_model.hparams,
                "model": ad_model.name,
                "category": category,
                "seed": seed,
                "epochs": epochs,
                "batch_size": batch_size,
                "val_fraction": val_fraction,
            }
        )
        job.cfg.on_epoch = tracker.epoch_logger(on_epoch)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{stamp}.partial-"))
    try:
        for sub in RUN_SUBDIRS:
            (tmp / sub).mkdir()
        fit_result = job.run()
        history = fit_result.pop("history", [])
        calib = job.val or job.train
        scores, _ = ad_model.score_paths(calib, batch_size, num_workers, progress, "validation scores")
        extra = {
            "train_images": len(job.train),
            "val_images": len(job.val),
            "seed": seed,
            **ad_model.fit_info,
            "fit": fit_result,
        }
        if tracker is not None:
            extra["mlflow"] = tracker.reference()
        meta = build_meta(ad_model, category, job.data.data_root, scores, extra)
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
        if history:
            from ad_core.viz import loss_curves

            loss_curves(history, tmp / "logs" / "loss_curve.png", f"{ad_model.name} / {category}: training losses")
        final = _into_existing(tmp, run_dir) if run_dir is not None else _finalise(tmp, parent, stamp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.log_train_run(final, meta)
        tracker.end()
    return final
