"""PaDiM: anomalib's ``PadimModel``; mean and inverse covariance in ``stats.npz``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.models.image.padim.torch_model import PadimModel
from torch import nn
from tqdm.auto import tqdm

from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.errors import BundleError, ConfigError
from ad_core.models.backbone_model import BackboneModel, layer_channels, layer_reductions
from ad_core.models.base import FitConfig, TrainingStopped
from ad_core.runners import ieee_fp32

REG = 0.01 + 1e-5  # anomalib's regularisation of the covariance


def _eye(covariance: torch.Tensor) -> torch.Tensor:
    return torch.eye(covariance.shape[-1], dtype=covariance.dtype, device=covariance.device)


def _mean_variance(covariance: torch.Tensor) -> torch.Tensor:
    """``tr S / C`` per position, shaped to broadcast against ``(HW, C, C)``."""
    return covariance.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None]


def _shrink(covariance: torch.Tensor, s: float) -> torch.Tensor:
    """``(1 - s) S + s (tr S / C) I`` per position (``S``: ``(HW, C, C)``)."""
    if s <= 0:
        return covariance
    return (1 - s) * covariance + s * _mean_variance(covariance) * _eye(covariance)


def _unshrink(shrunk: torch.Tensor, s: float) -> torch.Tensor:
    """The inverse of :func:`_shrink` (the trace is unchanged by shrinking)."""
    if s <= 0:
        return shrunk
    return (shrunk - s * _mean_variance(shrunk) * _eye(shrunk)) / (1 - s)


def _inverse(matrices: torch.Tensor) -> torch.Tensor:
    """Batched inverse in the input's precision, on its device: torch's on a GPU, numpy's on the CPU.

    A batched ``torch.linalg.inv`` of 1,024 152x152 matrices returned garbage with MKL on a CPU
    (docs/benchmarks.md), so the CPU keeps numpy's LAPACK. On a GPU, inverting there spares moving
    the covariances (757 MB at 256 px) to the host and a slow host inverse (an H200 fitted PaDiM
    6.5x slower than anomalib with numpy's).
    """
    if matrices.is_cuda:
        return torch.linalg.inv(matrices)
    return torch.from_numpy(np.linalg.inv(matrices.numpy()))


class PooledPadimModel(PadimModel):
    """anomalib's ``PadimModel`` whose embedding first averages some layers' features over a small window.

    The local average (PatchCore's "locally aware patch features") makes each position's Gaussian
    describe its neighbourhood, so a shift of a pixel or two is not an anomaly. ``pooled`` names the
    layers that are averaged (those whose map is fine enough, see :func:`pooled_layers`); with none
    it is anomalib's model exactly (bundles from before the option load with it). Fitting, the export
    graph and anomalib's own forward all go through :meth:`generate_embedding`, so they stay one path.
    """

    def __init__(self, *args, feature_pool: int = 1, pooled: Sequence[str] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.feature_pool = nn.AvgPool2d(feature_pool, 1, feature_pool // 2) if feature_pool > 1 else nn.Identity()
        self.pooled = tuple(pooled)

    def generate_embedding(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pooled features, concatenated and subset as anomalib does."""
        return super().generate_embedding(
            {layer: self.feature_pool(f) if layer in self.pooled else f for layer, f in features.items()}
        )


def pooled_layers(backbone: str, layers: Sequence[str], image_size: int, min_side: int) -> list[str]:
    """The layers whose feature map at ``image_size`` is at least ``min_side`` positions across.

    Measured (docs/benchmarks.md): a 3x3 average of Lite0's ``blocks.4`` helps at 256 px (a 16x16
    map: +1.5 to +2.3 points on ELPV) but costs 5 to 8 points on the sample brick at 128 px (8x8, where
    the window spans three-eighths of the image); pooling only the finer maps keeps both gains.
    """
    reduction = layer_reductions(backbone)
    return [layer for layer in layers if math.ceil(image_size / reduction[layer]) >= min_side]


class Padim(BackboneModel):
    """Mahalanobis distance of each patch to a per-position Gaussian of normal features."""

    name = "padim"
    chunk = 512
    """Positions whose covariance is shrunk and inverted at once."""

    def build_module(self) -> PadimModel:
        """AnomaLib's torch model with a seeded channel subset (all channels by default) and the feature pooling."""
        pool = int(self.hparams["feature_pool"])
        if pool % 2 == 0:
            raise ConfigError(f"feature_pool: {pool} is even; give an odd window (1 = no pooling, 3, 5 ...)")
        hp = self.hparams
        pooled = pooled_layers(hp["backbone"], hp["layers"], hp["image_size"], hp["pool_min_side"]) if pool > 1 else []
        if not self.hparams["n_features"]:
            self.hparams["n_features"] = sum(
                layer_channels(self.hparams["backbone"])[n] for n in self.hparams["layers"]
            )
        try:
            with torch.random.fork_rng():  # seeded channel subset (saved in model.pth), caller's RNG untouched
                torch.manual_seed(0)
                return PooledPadimModel(
                    backbone=self.hparams["backbone"],
                    layers=list(self.hparams["layers"]),
                    pre_trained=False,
                    n_features=self.hparams["n_features"],
                    feature_pool=pool,
                    pooled=pooled,
                ).eval()
        except ValueError as exc:
            raise ConfigError(f"n_features: {exc}") from exc

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.covariance: torch.Tensor | None = None  # (HW, C, C) sample covariance, float64, on the device
        self.n_samples = 0

    @torch.no_grad()
    def _moments(self, paths: Sequence[Path], cfg: FitConfig) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Image count, per-position sums ``(C, HW)`` and sums of outer products ``(HW, C, C)``, float64 on the device.

        The features are extracted in IEEE fp32 (no TF32 on a GPU), as the scorer computes them.
        """
        loader = make_loader(ImageDataset(paths, self.preprocess), cfg.batch_size, cfg.num_workers)

        def features() -> Iterator[dict[str, torch.Tensor]]:
            for i, batch in enumerate(tqdm(loader, desc="padim features", disable=not cfg.progress, leave=False), 1):
                if cfg.stop.is_set():
                    raise TrainingStopped("training stopped on request")
                cfg.progress_of("features", i, len(loader))
                yield self.module.feature_extractor(self.on_device(batch["image"]))

        return self.feature_moments(features())

    @torch.no_grad()
    def feature_moments(self, features: Iterable[dict[str, torch.Tensor]]) -> tuple[int, torch.Tensor, torch.Tensor]:
        """:meth:`_moments` of the backbone's per-layer features, one batch at a time.

        Features cached once can be fitted under many heads (``bench/bench_ablation.py``) by the same code.
        """
        m = self.module
        n, total, outer = 0, None, None
        with ieee_fp32():
            for batch in features:
                emb = m.generate_embedding(batch)
                emb = emb.reshape(emb.shape[0], emb.shape[1], -1).double()
                s, q = emb.sum(0), torch.einsum("bci,bdi->icd", emb, emb)
                total, outer = (s, q) if total is None else (total + s, outer + q)
                n += emb.shape[0]
        return n, total, outer

    @torch.no_grad()
    def _set_gaussian(self, n: int, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        """Install mean and inverse covariance: shrunk toward the mean variance, then anomalib's +0.01 I + 1e-5 I.

        With a few hundred images and 150 channels the sample covariance's smallest eigenvalues are mostly
        noise, and the Mahalanobis distance amplifies them; shrinking toward a scaled identity (Ledoit
        and Wolf's target) keeps the directions the data supports. ``shrinkage`` 0 is anomalib's estimator.
        Computed in float64 on the model's device, ``chunk`` positions at a time (bounded memory).
        """
        dev = self.device.torch()
        covariance = covariance.to(dev, torch.float64)
        inv = torch.empty(covariance.shape, dtype=torch.float32, device=dev)
        reg = REG * _eye(covariance)
        for s in range(0, len(covariance), self.chunk):
            block = _shrink(covariance[s : s + self.chunk], float(self.hparams["shrinkage"])) + reg
            inv[s : s + self.chunk] = _inverse(block).to(dev)
        self.module.gaussian.mean = mean.to(dev, torch.float32)
        self.module.gaussian.inv_covariance = inv
        self.covariance, self.n_samples = covariance, n

    @staticmethod
    def sample_gaussian(n: int, total: torch.Tensor, outer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position mean ``(C, HW)`` and sample covariance ``(HW, C, C)`` from :meth:`feature_moments`' sums.

        ``outer`` becomes the covariance in place (757 MB at 256 px, not twice that on a GPU).
        """
        if n < 2:
            raise ConfigError(f"PaDiM needs at least 2 training images, got {n}")
        mean = total / n
        return mean, outer.sub_(torch.einsum("ci,di->icd", mean, mean), alpha=n).div_(n - 1)

    def _fit_moments(self, n: int, total: torch.Tensor, outer: torch.Tensor) -> dict[str, Any]:
        mean, covariance = self.sample_gaussian(n, total, outer)
        self._set_gaussian(n, mean, covariance)
        return {"n_features": int(mean.shape[0]), "positions": int(mean.shape[1]), "n_samples": n}

    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Per-position mean and covariance of the training embeddings (anomalib's estimator)."""
        self.module.eval()
        return self._fit_moments(*self._moments(train, cfg))

    def previous_arrays(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
        """A seed-era ``stats.npz`` lacks the image count; meta.json's ``train_images`` has it."""
        if "n_samples" not in arrays and "train_images" in meta:
            arrays = {**arrays, "n_samples": np.asarray(meta["train_images"])}
        return arrays

    def update(
        self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig, previous: dict[str, np.ndarray] | None
    ) -> dict[str, Any]:
        """Refit on the new images, or merge them into the ``previous`` statistics.

        Merging is exact: the old mean and covariance with their image count are turned back into
        sums, the new images' sums are added, and the Gaussian is recomputed, so the result equals
        a fit on old and new images together.
        """
        if previous is None:
            return self.fit(train, val, cfg)
        self.set_artifacts(previous)
        if not self.n_samples:
            raise BundleError(
                "stats.npz has no 'n_samples' and meta.json no 'train_images': merging needs the number of images "
                "the statistics came from; retrain without --load_stats to rebuild them from the new images"
            )
        return self.absorb(train, cfg)

    def absorb(self, paths: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Merge the images into the statistics exactly (as a fit on all the images would give them)."""
        g = self.module.gaussian
        if self.covariance is None:  # seed-era stats.npz: recover the covariance from its inverse
            inv = g.inv_covariance.double()
            self.covariance = _unshrink(_inverse(inv).to(inv.device) - REG * _eye(inv), self.hparams["shrinkage"])
        n0, mean0 = self.n_samples, g.mean.double()
        n1, total1, outer1 = self._moments(paths, cfg)
        mean1 = total1 / n1
        scatter1 = outer1.sub_(torch.einsum("ci,di->icd", mean1, mean1), alpha=n1)
        # Chan et al.'s pairwise update: no cancellation between large sums of squares
        n = n0 + n1
        delta = mean1 - mean0
        scatter = self.covariance * (n0 - 1) + scatter1 + torch.einsum("ci,di->icd", delta, delta) * (n0 * n1 / n)
        self._set_gaussian(n, mean0 + delta * (n1 / n), scatter / (n - 1))
        info = {"n_features": int(mean0.shape[0]), "positions": int(mean0.shape[1]), "n_samples": n}
        return {"mode": "merge", "old_n_samples": n0, "new_images": n1, **info}

    def artifact_buffers(self) -> dict[str, torch.Tensor]:
        """The Gaussian goes to stats.npz; model.pth keeps backbone and channel subset."""
        g = self.module.gaussian
        return {"gaussian.mean": g.mean, "gaussian.inv_covariance": g.inv_covariance}

    def artifacts(self) -> dict[str, np.ndarray]:
        """``mean (C, HW)`` and ``inv_covariance (HW, C, C)`` (seed keys), plus merge data.

        ``covariance`` and ``n_samples`` let a later retrain merge new images exactly (``--load_stats``).
        """
        g = self.module.gaussian
        out = {
            "mean": g.mean.cpu().numpy().astype(np.float32),
            "inv_covariance": g.inv_covariance.cpu().numpy().astype(np.float32),
        }
        if self.covariance is not None:
            out["covariance"] = self.covariance.cpu().numpy().astype(np.float32)
            out["n_samples"] = np.asarray(self.n_samples, np.int64)
        return out

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
        self.module.gaussian.mean = mean.to(self.device.torch())
        self.module.gaussian.inv_covariance = inv.to(self.device.torch())
        self.covariance, self.n_samples = None, int(arrays.get("n_samples", 0))
        if "covariance" in arrays:
            cov = np.asarray(arrays["covariance"], np.float64)
            if cov.shape != tuple(inv.shape):
                raise BundleError(f"stats.npz: covariance has shape {cov.shape}, expected {tuple(inv.shape)}")
            self.covariance = torch.from_numpy(cov).to(self.device.torch())
