"""Training into the seed's run directory ``models/<Model>/<CATEGORY>/<YYYYMMDD_HHMMSS>/``.

The run is assembled in a hidden ``.<stamp>.partial-*`` folder next to its final place and
renamed only when complete (:func:`ad_core.rundir.staged`), so a crash or Ctrl-C leaves nothing
that looks finished, and an existing run is never overwritten (a second run in the same second
gets a ``_2`` suffix).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ad_core.bundle import write_bundle
from ad_core.data.layout import CategoryData, resolve_category
from ad_core.errors import ConfigError
from ad_core.fileio import write_bytes_atomic, write_json_atomic
from ad_core.models import AnomalyModel, create_model, get_spec
from ad_core.options import TrainOptions
from ad_core.rundir import RUN_SUBDIRS, RunDir, staged


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
        **model.device.meta(),
        **{k: v for k, v in model.hparams.items() if k not in model.meta() and k != "image_size"},
        **extra,
    }
    return meta


@dataclass
class FitJob:
    """Everything a fit needs, validated before any work starts (shared by train and tune)."""

    data: CategoryData
    model: AnomalyModel
    options: TrainOptions
    train: list[Path]
    val: list[Path]

    def absorb_val(self) -> dict[str, Any] | None:
        """PatchCore / PaDiM: add the held-out images to the fitted model (``merge_val``); ``None`` when not done.

        Call it after the held-out images have been scored for calibration: from then on they are in the model.
        """
        if not (self.options.merge_val and self.val):
            return None
        return self.model.absorb(self.val, self.options)

    @property
    def cfg(self) -> TrainOptions:
        """The options the model's fit receives."""
        return self.options

    def run(self) -> dict[str, Any]:
        """Load pretrained weights and fit on the normal images; return the fit result."""
        with cuda_memory_errors(self.model, self.options.batch_size, "training"):
            self.model.prepare_pretrained(self.options)
            return self.model.fit(self.train, self.val, self.options)


@contextlib.contextmanager
def cuda_memory_errors(model: AnomalyModel, batch_size: int, what: str):
    """CUDA running out of memory becomes a message that names the flag to change."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        from ad_core.models.base import out_of_memory

        raise out_of_memory(exc, model.device, batch_size, what) from exc


def prepare_fit(
    model: str,
    category: str,
    data_root: str | Path = "data",
    options: TrainOptions | None = None,
    hparams: dict[str, Any] | None = None,
    *,
    require_test: bool = False,
) -> FitJob:
    """Resolve the data, build the model (seeded, so a configuration trains the same twice), split train/val."""
    options = options or TrainOptions()
    device = options.resolve_device()  # `--device cuda` without a GPU fails here, before any work
    data = resolve_category(data_root, category, require_test=require_test)
    torch.manual_seed(options.seed)
    ad_model = create_model(model, **(hparams or {})).to(device)
    ad_model.preprocess  # noqa: B018 - a tiling that cannot work is refused here, before any folder is made
    train_paths, val_paths = split_train_val(data.train, options.val_fraction, options.seed)
    return FitJob(data, ad_model, options, train_paths, val_paths)


def train(
    model: str,
    category: str,
    data_root: str | Path = "data",
    models_root: str | Path = "models",
    *,
    options: TrainOptions | None = None,
    run_dir: str | Path | None = None,
    mlflow: str | bool | None = None,
    **kwargs: Any,
) -> Path:
    """Train ``model`` on ``data_root``'s normal images of ``category``; return the run directory.

    ``kwargs`` are :class:`TrainOptions` fields (``seed``, ``batch_size``, ``epochs``, ``progress``,
    ``stop`` ...) and the model's hyperparameters (``image_size``, ``backbone``, ``coreset_ratio``,
    ...), validated against the registry before any work starts; ``options`` gives the former as one
    object. ``run_dir`` names a run directory made by ``ad-core tune`` (it holds only ``param/``):
    training then fills that directory, as in the seed's flow. With ``mlflow`` (True for the local
    ``mlruns/`` store, or a tracking URI) parameters, per-epoch losses and the ``pytorch/`` bundle
    are logged to MLflow and meta.json records the run.
    """
    options, hparams = TrainOptions.split(kwargs, options)
    job = prepare_fit(model, category, data_root, options, hparams)
    ad_model = job.model
    parent = Path(models_root) / ad_model.dir_name / category
    if run_dir is not None:
        target = RunDir.of(run_dir)
        if target.pytorch.exists():
            raise ConfigError(f"{run_dir} already holds a trained model (pytorch/); train into a new run directory")
        if not target.path.is_dir():
            raise ConfigError(f"run directory {run_dir} does not exist")
        final, mode = target.path, "replace"
    else:
        final, mode = parent / _dt.datetime.now().strftime("%Y%m%d_%H%M%S"), "new"
    tracker = None
    if mlflow:
        from ad_core.tracking import Tracker

        tracker = Tracker.start(mlflow, f"{ad_model.dir_name}/{category}", run_name=f"train {ad_model.name}")
        tracker.log_params({**ad_model.hparams, "model": ad_model.name, "category": category, **options.logged()})
        options.on_epoch = tracker.epoch_logger(options.on_epoch)
    try:
        with staged(final, mode, keep=("param",)) as stage:
            meta = _fill_run(job, RunDir(stage.path), category, tracker)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.log_train_run(stage.final, meta)
        tracker.end()
    return stage.final


def _fill_run(job: FitJob, run: RunDir, category: str, tracker) -> dict[str, Any]:
    """Fit, calibrate on held-out normal images and write every file of the run into ``run``.

    The threshold and the score range come from the held-out images scored by the model that has not
    seen them. PatchCore and PaDiM then absorb those images (``merge_val``, the default), so the
    deployed model is fitted on every normal image. A bigger bank or a better-estimated Gaussian
    scores unseen normal images the same or a little lower, so the threshold errs toward fewer
    false alarms (docs/benchmarks.md measures both effects).
    """
    ad_model, options = job.model, job.options
    for sub in RUN_SUBDIRS:
        (run.path / sub).mkdir(exist_ok=True)
    fit_result = job.run()
    history = fit_result.pop("history", [])
    calib = job.val or job.train
    scores, _ = ad_model.score_paths(
        calib, options.batch_size, options.num_workers, options.progress, "validation scores", options.on_progress
    )
    merged = job.absorb_val()
    if merged is not None:
        fit_result["merged_val"] = merged
    extra = {
        "train_images": len(job.train),
        "val_images": len(job.val),
        "val_merged": merged is not None,
        "seed": options.seed,
        **ad_model.fit_info,
        "fit": fit_result,
    }
    if tracker is not None:
        extra["mlflow"] = tracker.reference()
    meta = write_bundle(ad_model, run.pytorch, build_meta(ad_model, category, job.data.data_root, scores, extra))
    write_bytes_atomic(run.param / "params.yaml", yaml.safe_dump(dict(ad_model.hparams), sort_keys=False).encode())
    write_bytes_atomic(run.logs / "history.csv", history_csv(history))
    write_json_atomic(run.logs / "train.json", {"fit": fit_result, "validation_scores": scores.tolist()})
    if history:
        from ad_core.viz import loss_curves

        loss_curves(history, run.logs / "loss_curve.png", f"{ad_model.name} / {category}: training losses")
    return meta
