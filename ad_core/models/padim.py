"""PaDiM: anomalib's ``PadimModel``; mean and inverse covariance in ``stats.npz``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.models.image.padim.torch_model import PadimModel
from tqdm.auto import tqdm

from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.errors import BundleError, ConfigError
from ad_core.models.backbone_model import BACKBONE_PARAMS, BackboneModel
from ad_core.models.base import FitConfig, TrainingStopped
from ad_core.models.registry import ModelSpec, Param, register_model


class Padim(BackboneModel):
    """Mahalanobis distance of each patch to a per-position Gaussian of normal features."""

    name = "padim"
    dir_name = "PaDiM"
    artifact_file = "stats.npz"
    artifact_key = "stats"
    seed_keys = ("backbone", "layers", "n_features")

    def build_module(self) -> PadimModel:
        """AnomaLib's torch model with a seeded random feature subset."""
        try:
            with torch.random.fork_rng():  # seeded channel subset (saved in model.pth), caller's RNG untouched
                torch.manual_seed(0)
                return PadimModel(
                    backbone=self.hparams["backbone"],
                    layers=list(self.hparams["layers"]),
                    pre_trained=False,
                    n_features=self.hparams["n_features"],
                ).eval()
        except ValueError as exc:
            raise ConfigError(f"n_features: {exc}") from exc

    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Collect embeddings of all training images and fit the Gaussian."""
        loader = make_loader(ImageDataset(train, self.preprocess), cfg.batch_size, cfg.num_workers)
        self.module.train()
        self.module.memory_bank = []
        for batch in tqdm(loader, desc="padim features", disable=not cfg.progress, leave=False):
            if cfg.stop.is_set():
                raise TrainingStopped("training stopped on request")
            self.module(batch["image"])
        self.module.fit()
        self.module.eval()
        mean = self.module.gaussian.mean
        return {"n_features": int(mean.shape[0]), "positions": int(mean.shape[1])}

    def artifact_buffers(self) -> dict[str, torch.Tensor]:
        """The Gaussian goes to stats.npz; model.pth keeps backbone and channel subset."""
        g = self.module.gaussian
        return {"gaussian.mean": g.mean, "gaussian.inv_covariance": g.inv_covariance}

    def artifacts(self) -> dict[str, np.ndarray]:
        """``mean (C, HW)`` and ``inv_covariance (HW, C, C)`` as float32."""
        g = self.module.gaussian
        return {
            "mean": g.mean.cpu().numpy().astype(np.float32),
            "inv_covariance": g.inv_covariance.cpu().numpy().astype(np.float32),
        }

    def set_artifacts(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Install the Gaussian, checking it against the configured feature count."""
        if arrays is None or not {"mean", "inv_covariance"} <= set(arrays):
            raise BundleError("stats.npz must hold arrays 'mean' and 'inv_covariance'")
        mean = torch.from_numpy(np.asarray(arrays["mean"], np.float32))
        inv = torch.from_numpy(np.asarray(arrays["inv_covariance"], np.float32))
        c = self.hparams["n_features"] or int(self.module.n_features)
        if mean.ndim != 2 or mean.shape[0] != c or inv.shape != (mean.shape[1], c, c):
            raise BundleError(
                f"stats.npz holds mean {tuple(mean.shape)} and inv_covariance {tuple(inv.shape)}; "
                f"n_features={c} needs mean (C={c}, HW) and inv_covariance (HW, {c}, {c})"
            )
        self.module.gaussian.mean = mean
        self.module.gaussian.inv_covariance = inv


register_model(
    ModelSpec(
        name="padim",
        dir_name="PaDiM",
        factory=Padim,
        params=(
            *BACKBONE_PARAMS,
            Param(
                "n_features",
                int,
                100,
                "number of random feature channels kept for the Gaussian",
                low=2,
                high=2048,
            ),
        ),
        trained=False,
        description="PaDiM (Defard et al. 2021): per-position Gaussian of patch features, Mahalanobis distance",
    )
)
