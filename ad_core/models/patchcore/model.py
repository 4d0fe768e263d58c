"""PatchCore: anomalib's ``PatchcoreModel`` with a fast coreset; memory bank in ``memory_bank.npz``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.models.image.patchcore.torch_model import PatchcoreModel
from tqdm.auto import tqdm

from ad_core.data.dataset import ImageDataset, make_loader
from ad_core.errors import BundleError
from ad_core.models.backbone_model import BackboneModel
from ad_core.models.base import FitConfig, TrainingStopped
from ad_core.models.patchcore.coreset import k_center_greedy, k_center_greedy_plain
from ad_core.models.patchcore.graph import EmbeddingGraph
from ad_core.models.patchcore.knn import CellIndex
from ad_core.runners import ieee_fp32


def whitening_matrix(embeddings: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """``C^(-1/2)`` of the patch features' covariance, shrunk toward its mean variance (float32 ``(D, D)``).

    ``C = (1 - s) S + s tr(S)/D I + 0.01 I`` (PaDiM's estimator, pooled over every position): directions
    along which normal patches vary a lot (the grain of a texture) count less in the bank's distances,
    directions in which they hardly vary count more, as in PaDiM's Mahalanobis distance.
    """
    x = embeddings.reshape(-1, embeddings.shape[-1]).double()
    d = x.shape[1]
    cov = torch.cov(x.T)
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    cov = (1 - shrinkage) * cov + (shrinkage * torch.trace(cov) / d + 0.01) * eye
    values, vectors = np.linalg.eigh(cov.cpu().numpy())
    w = (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    return torch.from_numpy(w.astype(np.float32)).to(embeddings.device)


class PatchCore(BackboneModel):
    """Nearest-neighbour distance of patch features to a coreset of normal patch features."""

    name = "patchcore"

    def build_module(self) -> PatchcoreModel:
        """AnomaLib's torch model, weights loaded separately."""
        return PatchcoreModel(
            layers=list(self.hparams["layers"]),
            backbone=self.hparams["backbone"],
            pre_trained=False,
            num_neighbors=self.hparams["num_neighbors"],
        ).eval()

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.whitening: torch.Tensor | None = None  # (D, D), applied to every embedding before the bank

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(B*h*w, D)``: the export graph's output, as PatchcoreModel reshapes it.

        In IEEE fp32 (no TF32 on a GPU): the bank is then made of the features the scorer computes.
        """
        with ieee_fp32():
            return self.module.reshape_embedding(EmbeddingGraph(self.module)(images))

    def _embed_paths(self, paths: Sequence[Path], cfg: FitConfig) -> torch.Tensor:
        loader = make_loader(ImageDataset(paths, self.preprocess), cfg.batch_size, cfg.num_workers)
        chunks = []
        for i, batch in enumerate(tqdm(loader, desc="patchcore features", disable=not cfg.progress, leave=False), 1):
            if cfg.stop.is_set():
                raise TrainingStopped("training stopped on request")
            cfg.progress_of("features", i, len(loader))
            chunks.append(self.embed(self.on_device(batch["image"])))
        return torch.cat(chunks)

    def _whiten(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The embeddings in the bank's space: multiplied by ``whitening`` where the model has one."""
        w = self.whitening
        if w is None:
            return embeddings
        with ieee_fp32():
            return embeddings @ w.to(embeddings.device, embeddings.dtype)

    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Embed all training patches, keep a k-center greedy coreset of them; whiten them where ``whiten`` says.

        ``whiten_mode`` ``always`` whitens (``whiten`` > 0); ``auto`` first builds the plain bank and
        probes it with the held-out images: only where the pruned search cannot skip enough rows (so
        every frame pays FAISS's brute force either way) is the bank rebuilt whitened, at no extra
        cost per frame. Without held-out images ``auto`` keeps the plain bank.
        """
        embeddings = self._embed_paths(train, cfg)
        s = float(self.hparams.get("whiten") or 0.0)
        mode = self.hparams["whiten_mode"]
        self.whitening = whitening_matrix(embeddings, s) if s > 0 and mode == "always" else None
        info = self._build_bank(embeddings, cfg)
        if s > 0 and mode == "auto":
            share = self._plain_search_share(val, cfg)
            info["plain_search_share"] = None if share is None else round(share, 4)
            if share is not None and share > CellIndex.pays_below:
                self.whitening = whitening_matrix(embeddings, s)
                info = {**self._build_bank(embeddings, cfg), "plain_search_share": info["plain_search_share"]}
        info["whitened"] = self.whitening is not None
        return info

    def _build_bank(self, embeddings: torch.Tensor, cfg: FitConfig) -> dict[str, Any]:
        embeddings = self._whiten(embeddings)
        k = max(1, int(len(embeddings) * self.hparams["coreset_ratio"]))
        idx = self._coreset(embeddings, k, cfg.seed, cfg=cfg)
        self.module.memory_bank = embeddings[idx.to(embeddings.device)].contiguous()
        return {"n_embeddings": len(embeddings), "memory_bank_size": k, "embedding_dim": embeddings.shape[1]}

    def _plain_search_share(self, val: Sequence[Path], cfg: FitConfig) -> float | None:
        """Share of the plain bank the deployed CPU search computes per held-out patch (None: no held-out images)."""
        if not val:
            return None
        queries = self._embed_paths(val, cfg).cpu().numpy()
        return CellIndex(self.module.memory_bank.cpu().numpy(), fallback=False).probe_share(queries)

    def _coreset(
        self, embeddings: torch.Tensor, k: int, seed: int, existing: torch.Tensor | None = None, cfg: FitConfig = None
    ):
        """k-center greedy: the pruned numba greedy on the CPU; on CUDA the plain greedy, on the GPU.

        Both pick the same points up to float rounding (tests/test_coreset.py). The CPU greedy reports
        its progress and honours Stop between chunks of picks.
        """
        if embeddings.is_cuda:
            with ieee_fp32():  # the distances as the CPU computes them, so both pick the same points
                return k_center_greedy_plain(embeddings, k, seed=seed, existing=existing)
        if cfg is None:
            return k_center_greedy(embeddings, k, seed=seed, existing=existing)

        def report(done: int, total: int) -> None:
            if cfg.stop.is_set():
                raise TrainingStopped("training stopped on request")
            cfg.progress_of("coreset", done, total)

        return k_center_greedy(embeddings, k, seed=seed, existing=existing, progress=report)

    def update(
        self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig, previous: dict[str, np.ndarray] | None
    ) -> dict[str, Any]:
        """Rebuild the bank from the new images, or extend the ``previous`` bank with them.

        Extending keeps every old row and adds ``coreset_ratio`` of the new patch features, chosen by
        the same greedy continued from the old bank (new patches the bank already covers are not
        added), so the bank grows as if it had been built from old and new images together.
        """
        if previous is None:
            return self.fit(train, val, cfg)
        self.set_artifacts(previous)
        return self.absorb(train, cfg)

    def absorb(self, paths: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Extend the bank with ``coreset_ratio`` of the images' patch features, greedy continued from it."""
        old = self.module.memory_bank
        embeddings = self._whiten(self._embed_paths(paths, cfg))
        k = max(1, int(len(embeddings) * self.hparams["coreset_ratio"]))
        idx = self._coreset(embeddings, k, cfg.seed, existing=old.to(embeddings.device), cfg=cfg)
        self.module.memory_bank = torch.cat(
            [old.to(embeddings.device), embeddings[idx.to(embeddings.device)]]
        ).contiguous()
        return {
            "mode": "extend",
            "n_embeddings": len(embeddings),
            "old_memory_bank_size": len(old),
            "added": k,
            "memory_bank_size": len(self.module.memory_bank),
        }

    def artifact_buffers(self) -> dict[str, torch.Tensor]:
        """The bank goes to memory_bank.npz, not model.pth."""
        return {"memory_bank": self.module.memory_bank}

    def artifacts(self) -> dict[str, np.ndarray]:
        """The memory bank as float32 ``(N, D)``, and the ``whitening`` ``(D, D)`` its rows went through."""
        out = {"memory_bank": self.module.memory_bank.cpu().numpy().astype(np.float32)}
        if self.whitening is not None:
            out["whitening"] = self.whitening.cpu().numpy().astype(np.float32)
        return out

    def set_artifacts(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Install the memory bank, checking its width against the backbone's embedding."""
        if arrays is None or "memory_bank" not in arrays:
            raise BundleError("memory_bank.npz has no array 'memory_bank'")
        bank = torch.from_numpy(np.asarray(arrays["memory_bank"], np.float32))
        width = sum(self.module.feature_extractor.out_dims)
        if bank.ndim != 2 or bank.shape[1] != width or bank.shape[0] == 0:
            raise BundleError(
                f"memory_bank.npz holds an array of shape {tuple(bank.shape)}; this backbone "
                f"({self.hparams['backbone']}, layers {self.hparams['layers']}) needs (N, {width}) with N > 0"
            )
        self.module.memory_bank = bank.to(self.device.torch())
        self.whitening = None
        if "whitening" in arrays:
            w = np.asarray(arrays["whitening"], np.float32)
            if w.shape != (width, width):
                raise BundleError(f"memory_bank.npz: whitening has shape {w.shape}, expected ({width}, {width})")
            self.whitening = torch.from_numpy(w).to(self.device.torch())
