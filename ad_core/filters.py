"""Separable Gaussian blur: the same numbers as a full 2-D Gaussian kernel, at ``2k`` instead of ``k**2`` taps.

anomalib's ``GaussianBlur2d`` (PatchCore and PaDiM maps, sigma 4: a 33x33 kernel) convolves with the
full 2-D kernel; a normalised 2-D Gaussian is the outer product of two normalised 1-D ones, so two
1-D passes give the same result up to float rounding (about 1e-6 relative), 7x faster on a CPU.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@functools.cache
def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of size ``2 * int(4 sigma + 0.5) + 1`` (anomalib's), float32."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    x = np.arange(size, dtype=np.float32) - np.float32(size // 2)
    g = np.exp(-(x**2) / np.float32(2 * sigma**2))
    g = (g / g.sum()).astype(np.float32)
    g.flags.writeable = False  # cached and shared
    return g


def gaussian_kernel(sigma: float, channels: int = 1) -> torch.Tensor:
    """:func:`gaussian_kernel_1d` as a torch ``(C, 1, 1, k)`` depthwise kernel."""
    import torch

    g = torch.tensor(gaussian_kernel_1d(float(sigma)))
    return g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1).contiguous()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise blur with reflect padding (same size out) by a ``(C, 1, 1, k)`` kernel, rows then columns."""
    import torch.nn.functional as F

    k = kernel.shape[-1]
    x = F.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = F.conv2d(x, kernel, groups=kernel.shape[0])
    return F.conv2d(x, kernel.transpose(-1, -2), groups=kernel.shape[0])


def gaussian_blur(x: torch.Tensor, sigma: float = 4.0) -> torch.Tensor:
    """Blur every channel of ``(B, C, H, W)`` like anomalib's ``GaussianBlur2d(sigma)``."""
    return blur(x, gaussian_kernel(sigma, x.shape[1]).to(x.dtype))


def gaussian_blur_numpy(x: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """:func:`gaussian_blur` for a numpy array ``(..., H, W)``, on the calling thread (scipy.ndimage).

    scipy's ``mirror`` mode is torch's ``reflect`` padding; the two agree to float rounding
    (tests/test_scoring.py).
    """
    from scipy import ndimage

    g = gaussian_kernel_1d(float(sigma))
    rows = ndimage.correlate1d(np.asarray(x, np.float32), g, axis=-1, mode="mirror")
    return ndimage.correlate1d(rows, g, axis=-2, mode="mirror")


def nearest_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``F.interpolate(x, size=(size, size))`` (mode ``nearest``) for a numpy ``(..., h, w)`` array."""
    h, w = x.shape[-2:]
    # torch picks source index floor(dst * (in / out)), with the scale in float32
    rows = np.minimum(np.floor(np.arange(size, dtype=np.float32) * np.float32(h / size)).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(size, dtype=np.float32) * np.float32(w / size)).astype(np.int64), w - 1)
    return x[..., rows[:, None], cols[None, :]]


def resize_map(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 2-D float map resized bilinearly to ``(height, width)`` (PIL, the one map resize everywhere)."""
    heat = np.asarray(heat, np.float32)
    if heat.shape == (height, width):
        return heat
    from PIL import Image

    return np.asarray(Image.fromarray(heat).resize((int(width), int(height)), Image.BILINEAR))
