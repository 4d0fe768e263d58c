"""VAE: our own reconstruction model (seed 004); score = reconstruction error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ad_core.data.images import read_image
from ad_core.errors import ConfigError
from ad_core.models.base import AnomalyModel, FitConfig, train_loop
from ad_core.models.vae.torch_model import VAEModel, vae_loss
from ad_core.preprocessing import UNIT_SCALE


class VAE(AnomalyModel):
    """Variational auto-encoder trained on normal images only."""

    name = "vae"
    input_scale = UNIT_SCALE  # it reconstructs [0, 1] RGB (Sigmoid output): no ImageNet normalisation

    def build_module(self) -> VAEModel:
        """The seed 004 architecture."""
        try:
            return VAEModel(self.image_size, self.hparams["latent_dim"], tuple(self.hparams["enc_channels"]))
        except ValueError as exc:
            raise ConfigError(f"image_size / enc_channels: {exc}") from exc

    @torch.no_grad()
    def reconstruct(self, paths: Sequence[Path]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Inputs and reconstructions as RGB uint8 at model size, and the squared error per pixel."""
        self.module.eval()
        images, recons, errors = [], [], []
        for path in paths:
            x = self.on_device(self.preprocess(read_image(path))[None])
            mu, _ = self.module.encode(x)
            rec = self.module.decode(mu)
            x, rec = x.cpu(), rec.cpu()
            images.append(_to_uint8(x[0]))
            recons.append(_to_uint8(rec[0]))
            errors.append(((x[0] - rec[0]) ** 2).mean(dim=0).numpy())
        return images, recons, errors

    def fit(self, train: Sequence[Path], val: Sequence[Path], cfg: FitConfig) -> dict[str, Any]:
        """Adam on reconstruction + KL, early stopping on validation loss."""
        torch.manual_seed(cfg.seed)
        beta = self.hparams["kl_weight"]

        def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
            recon, mu, log_var = self.module(x)
            loss, rec, kl = vae_loss(x, recon, mu, log_var, beta)
            return {"loss": loss, "reconstruction": rec, "kl": kl}

        def val_loss(x: torch.Tensor) -> float:
            mu, _ = self.module.encode(x)
            return float(((self.module.decode(mu) - x) ** 2).sum() / x.shape[0])

        return train_loop(
            self,
            list(self.module.parameters()),
            step,
            val_loss,
            train,
            val,
            cfg,
            self.hparams["learning_rate"],
            60,
            max_grad_norm=100.0,
        )


def _to_uint8(chw: torch.Tensor) -> np.ndarray:
    return (chw.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
