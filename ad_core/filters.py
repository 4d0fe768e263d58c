"""Separable Gaussian blur: the same numbers as a full 2-D Gaussian kernel, at ``2k`` instead of ``k**2`` taps.

anomalib's ``GaussianBlur2d`` (PatchCore and PaDiM maps, sigma 4: a 33x33 kernel) convolves with the
full 2-D kernel; a normalised 2-D Gaussian is the outer product of two normalised 1-D ones, so two
1-D passes give the same result up to float rounding (about 1e-6 relative), 7x faster on a CPU.

Where the map is first resized from the patch grid (PatchCore's head, PaDiM's graph), resize and
blur are both linear and act on rows and columns apart: each axis is one ``(S, h)`` matrix, and the
map is ``R X C^T`` (:func:`nearest_resize_blur`, :func:`resize_blur`), 25-60x faster again
(``bench/bench_map.py``).
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


def _nearest_source(n: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` outputs when ``n`` values are resized (torch's ``nearest``)."""
    # torch picks source index floor(dst * (in / out)), with the scale in float32
    return np.minimum(np.floor(np.arange(size, dtype=np.float32) * np.float32(n / size)).astype(np.int64), n - 1)


def nearest_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``F.interpolate(x, size=(size, size))`` (mode ``nearest``) for a numpy ``(..., h, w)`` array."""
    h, w = x.shape[-2:]
    return x[..., _nearest_source(h, size)[:, None], _nearest_source(w, size)[None, :]]


def _bilinear_weights(n: int, size: int) -> np.ndarray:
    """``(size, n)``: torch's ``bilinear`` resize (``align_corners=False``) of ``n`` values to ``size``."""
    src = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    weights = np.zeros((size, n))
    np.add.at(weights, (np.arange(size), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(size), hi), frac)
    return weights


@functools.cache
def resize_blur_operator(n: int, size: int, sigma: float, mode: str = "nearest") -> np.ndarray:
    """``(size, n)``: a resize of ``n`` values to ``size``, then the 1-D Gaussian, as one float32 matrix.

    The resize is torch's ``nearest`` or ``bilinear`` (``align_corners=False``); the blur pads as torch's
    ``reflect`` (scipy's ``mirror``).
    """
    from scipy import ndimage

    resize = np.eye(n)[_nearest_source(n, size)] if mode == "nearest" else _bilinear_weights(n, size)
    op = ndimage.correlate1d(resize, gaussian_kernel_1d(sigma).astype(np.float64), axis=0, mode="mirror")
    op = op.astype(np.float32)
    op.flags.writeable = False  # cached and shared
    return op


def resize_blur(x: torch.Tensor, size: tuple[int, int], sigma: float, mode: str) -> torch.Tensor:
    """``blur(F.interpolate(x, size, mode=mode), gaussian_kernel(sigma))`` for ``(B, C, h, w)`` as ``R x C^T``.

    The operators are constants (an exported graph holds two small matrices, ``(H, h)`` and ``(W, w)``).
    """
    import warnings

    import torch

    with warnings.catch_warnings():  # an exported graph has a fixed map size: the sizes and matrices are constants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        h, w = (int(n) for n in x.shape[-2:])
        rows = _operator_tensor(h, int(size[0]), float(sigma), mode, x.device, x.dtype)
        cols = _operator_tensor(w, int(size[1]), float(sigma), mode, x.device, x.dtype)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=16)
def _operator_tensor(n: int, size: int, sigma: float, mode: str, device, dtype) -> torch.Tensor:
    """:func:`resize_blur_operator` as a tensor on ``device``, made once (not on every frame)."""
    import torch

    return torch.from_numpy(resize_blur_operator(n, size, sigma, mode).copy()).to(device, dtype)


def nearest_resize_blur(x: np.ndarray, size: int, sigma: float = 4.0) -> np.ndarray:
    """``gaussian_blur_numpy(nearest_resize(x, size), sigma)`` for ``(..., h, w)``, as two small matrix products.

    Both steps are linear and act on rows and columns apart, so along each axis they are one
    ``(size, h)`` matrix: ``R X C^T`` computes the map from the ``h x w`` patch scores directly,
    without blurring ``size x size`` pixels 33 taps at a time (PatchCore's map: 32x32 scores to
    256x256 pixels, about 15x less arithmetic; ``bench/bench_map.py``). Equal to float rounding.
    """
    x = np.asarray(x, np.float32)
    h, w = x.shape[-2:]
    rows, cols = resize_blur_operator(h, size, float(sigma)), resize_blur_operator(w, size, float(sigma))
    return np.matmul(np.matmul(rows, x), cols.T)


def resize_map(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 2-D float map resized bilinearly to ``(height, width)`` (PIL, the one map resize everywhere)."""
    heat = np.asarray(heat, np.float32)
    if heat.shape == (height, width):
        return heat
    from PIL import Image

    return np.asarray(Image.fromarray(heat).resize((int(width), int(height)), Image.BILINEAR))
