"""Reading images of any common format into one consistent RGB uint8 array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ad_core.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


def is_image_file(path: Path) -> bool:
    """True when ``path`` has an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any integer or float image to uint8 by the full range of its type.

    16-bit images are divided by 257 (65535 -> 255), 32-bit integer images (PIL mode ``I``,
    which is how 16-bit PNGs often open) are treated as 16-bit when they fit, and float images
    are taken to be in [0, 1].
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    max_value = 65535 if arr.max(initial=0) <= 65535 else np.iinfo(arr.dtype).max
    return (arr.astype(np.float64) * (255.0 / max_value) + 0.5).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` RGB uint8 array.

    Grayscale is replicated to three channels, alpha is dropped (the colour channels are kept
    as stored), palettes are expanded and 16-bit or float images are scaled to 8 bits.

    Raises:
        DataError: the file is missing, empty or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected an image (PNG, JPEG, BMP, TIFF, ...)")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"}:
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc}); the file is corrupt or not an image") from exc
    arr = to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 2:  # grey + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.shape[2] >= 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as a boolean ``(H, W)`` array (any non-zero pixel is a defect).

    Args:
        path: the mask file, or a folder of mask files that together make one image's mask (MVTec
            LOCO and AutoVI give each defect of an image its own file in ``ground_truth/<defect>/<stem>/``):
            their union.
        size: optional ``(height, width)`` to resize to (nearest neighbour).

    Raises:
        DataError: a mask folder holds no image, or masks of different sizes.
    """
    path = Path(path)
    if path.is_dir():
        parts = [read_image(p).max(axis=2) > 0 for p in list_images(path)]
        if not parts:
            raise DataError(f"{path}: a mask folder with no mask images in it")
        if len({m.shape for m in parts}) > 1:
            raise DataError(f"{path}: its masks differ in size ({sorted({m.shape for m in parts})}); expected one size")
        mask = np.logical_or.reduce(parts)
    else:
        mask = read_image(path).max(axis=2) > 0
    return mask if size is None else resize_mask(mask, size)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized to ``(height, width)`` by nearest neighbour (unchanged when it has that size)."""
    if mask.shape == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 0
