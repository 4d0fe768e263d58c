"""The seed 004 convolutional auto-encoder with a reparameterised (variational) latent.

Encoder: per entry of ``enc_channels`` a block Conv3x3 -> BatchNorm -> ReLU -> MaxPool2x2; the
feature map is flattened to ``mu`` and ``log_var`` of size ``latent_dim``. Decoder: the mirror
image with ConvTranspose (stride 2), ending in a Sigmoid so the output is an image in [0, 1].
A plain ``nn.Module``: no training loop, no file I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from ad_core.filters import blur, gaussian_kernel


class VAEModel(nn.Module):
    """Variational auto-encoder; in eval mode returns the reconstruction error as an anomaly map."""

    def __init__(self, image_size: int = 256, latent_dim: int = 128, enc_channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        depth = len(enc_channels)
        if image_size % (2**depth):
            raise ValueError(f"image_size {image_size} must be divisible by 2**{depth} for {depth} encoder blocks")
        self.image_size = image_size
        self.feat = image_size // 2**depth
        chans = [3, *enc_channels]
        self.encoder = nn.Sequential(
            *[
                nn.Sequential(
                    nn.Conv2d(chans[i], chans[i + 1], 3, padding=1),
                    nn.BatchNorm2d(chans[i + 1]),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
                for i in range(depth)
            ]
        )
        flat = enc_channels[-1] * self.feat * self.feat
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_log_var = nn.Linear(flat, latent_dim)
        self.fc_decode = nn.Linear(latent_dim, flat)
        nn.init.zeros_(self.fc_log_var.weight)  # start at unit variance
        nn.init.zeros_(self.fc_log_var.bias)
        rev = [*enc_channels[::-1], 3]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.ConvTranspose2d(rev[i], rev[i + 1], 4, stride=2, padding=1))
            layers.append(
                nn.Sigmoid() if i == depth - 1 else nn.Sequential(nn.BatchNorm2d(rev[i + 1]), nn.ReLU(inplace=True))
            )
        self.decoder = nn.Sequential(*layers)
        self.last_channels = enc_channels[-1]
        self.register_buffer("pre_kernel", gaussian_kernel(1.0, 3), persistent=False)
        self.register_buffer("map_kernel", gaussian_kernel(2.0, 1), persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu`` and ``log_var`` of the latent Gaussian.

        ``log_var`` is squashed smoothly into (-10, 10) (``10 tanh(v / 10)``): ``exp`` cannot
        overflow when the wide first layer takes a big step, and, unlike a hard clamp, the
        gradient never vanishes at the limits.
        """
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), 10.0 * torch.tanh(self.fc_log_var(h) / 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] from a latent vector."""
        h = self.fc_decode(z).view(-1, self.last_channels, self.feat, self.feat)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | InferenceBatch:
        """Training: ``(reconstruction, mu, log_var)``. Eval: ``InferenceBatch`` of error maps.

        The anomaly map is the per-pixel squared reconstruction error (mean over RGB) between
        lightly smoothed input and reconstruction (sigma 1: a VAE cannot reproduce the finest
        texture, so that error is noise), smoothed again (sigma 2); the image score is its maximum.
        """
        mu, log_var = self.encode(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
            return self.decode(z), mu, log_var
        recon = self.decode(mu)
        error = ((blur(x, self.pre_kernel) - blur(recon, self.pre_kernel)) ** 2).mean(dim=1, keepdim=True)
        anomaly_map = blur(error, self.map_kernel)
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(-2, -1)).flatten(), anomaly_map=anomaly_map)


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor, beta: float = 1.0):
    """Per-image summed squared error plus ``beta`` times the KL divergence to N(0, I)."""
    rec = F.mse_loss(recon, x, reduction="sum") / x.shape[0]
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp()) / x.shape[0]
    return rec + beta * kl, rec, kl
