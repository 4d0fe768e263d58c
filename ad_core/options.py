"""How to train: one options object shared by train, tune, retrain, the models, the CLI and the panels.

:class:`TrainOptions` says once what used to be threaded through every call as keyword arguments
(seed, batch size, epochs, early stopping, weights, progress, cancellation). The public functions
still take those keywords (``train("padim", ..., epochs=3, image_size=128)``):
:meth:`TrainOptions.split` separates them from the model's hyperparameters.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ad_core.errors import ConfigError


@dataclass
class TrainOptions:
    """Loader settings, epochs and early stopping, weights, progress and cancellation."""

    seed: int = 0
    batch_size: int = 8
    num_workers: int = 0
    epochs: int | None = None
    patience: int = 5
    val_fraction: float = 0.1
    merge_val: bool = True
    """after the held-out images calibrate the threshold, add them to PatchCore's bank / PaDiM's statistics"""
    weights: str | Path | None = None
    allow_download: bool | None = None
    progress: bool = True
    on_epoch: Callable[[dict], None] | None = None
    on_progress: Callable[[str, int, int], None] | None = None
    """``(stage, done, total)`` for long steps inside a fit (distillation, feature extraction, coreset)"""
    stop: threading.Event = field(default_factory=threading.Event)
    device: str = "auto"
    """``auto`` (CUDA when PyTorch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``"""
    precision: str = "auto"
    """training precision: ``auto`` (mixed bf16/fp16 on CUDA, fp32 on the CPU), ``fp32`` or ``amp``"""

    def __post_init__(self) -> None:
        if self.stop is None:
            self.stop = threading.Event()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size}: give at least 1 image per batch")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction {self.val_fraction}: a fraction of the normal images, from 0 to below 1")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs {self.epochs}: give at least 1")
        if self.patience < 1:
            raise ConfigError(f"patience {self.patience}: give at least 1 epoch")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (everything else passed to train() is a hyperparameter)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs: dict[str, Any], base: TrainOptions | None = None) -> tuple[TrainOptions, dict[str, Any]]:
        """``(options, hyperparameters)`` from one keyword dict; ``None`` values keep the defaults (or ``base``)."""
        names = set(cls.names())
        given = {k: v for k, v in kwargs.items() if k in names and v is not None}
        hparams = {k: v for k, v in kwargs.items() if k not in names}
        return (dataclasses.replace(base, **given) if base is not None else cls(**given)), hparams

    def resolve_device(self):
        """The :class:`ad_core.device.Device` these options ask for (a clear error when CUDA is asked and absent)."""
        from ad_core.device import resolve

        return resolve(self.device, self.precision)

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with some options changed (the same stop event)."""
        return dataclasses.replace(self, **changes)

    def logged(self) -> dict[str, Any]:
        """The options worth recording (meta.json, MLflow, tuning files): plain values only."""
        keep = ("seed", "batch_size", "epochs", "patience", "val_fraction", "merge_val", "device", "precision")
        return {k: getattr(self, k) for k in keep}

    def progress_of(self, stage: str, done: int, total: int) -> None:
        """Report a step of a long stage to ``on_progress`` (panels), if set."""
        if self.on_progress is not None:
            self.on_progress(stage, done, total)
