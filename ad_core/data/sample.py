"""The bundled offline sample dataset: real texture photos with synthetic defects and masks.

The photos are the texture images that scikit-image ships (``skimage.data.brick``, ``gravel``,
``grass``), so the dataset is built on any machine without a download. Each category gets normal
crops for training (taken from the left part of the photo) and for testing (from the right part,
never seen in training) plus defective test crops with pixel masks. Defects are scratches,
stains, holes and two hard kinds: a faint stain and a patch of a foreign texture. The result is
byte-for-byte deterministic for a given seed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CATEGORIES: dict[str, tuple[str, tuple[float, float, float]]] = {
    "Sample_brick": ("brick", (1.00, 0.62, 0.50)),
    "Sample_gravel": ("gravel", (0.85, 0.88, 0.95)),
    "Sample_grass": ("grass", (0.62, 0.95, 0.45)),
}
DEFECTS = ("scratch", "stain", "hole", "faint_stain", "scratch", "stain", "hole", "foreign_texture")
CROP = 128
TRAIN_REGION = (0, 320)  # columns of the 512-px photo used for training crops
TEST_REGION = (320, 512)


def _texture(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def _crop(gray: np.ndarray, rng: np.random.Generator, region: tuple[int, int]) -> np.ndarray:
    y = int(rng.integers(0, gray.shape[0] - CROP + 1))
    x = int(rng.integers(region[0], region[1] - CROP + 1))
    patch = gray[y : y + CROP, x : x + CROP]
    patch = np.rot90(patch, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


def _colourise(gray: np.ndarray, tint: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    gain = 1.0 + rng.uniform(-0.05, 0.05)
    return np.clip(gray[:, :, None] * np.asarray(tint, np.float32)[None, None, :] * gain, 0.0, 1.0)


def _soft(mask: Image.Image, radius: float) -> np.ndarray:
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0


def _ellipse_mask(rng: np.random.Generator, rmin: int, rmax: int) -> Image.Image:
    mask = Image.new("L", (CROP, CROP), 0)
    cx, cy = rng.integers(24, CROP - 24, size=2)
    rx, ry = rng.integers(rmin, rmax + 1, size=2)
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return mask


def _add_defect(img: np.ndarray, kind: str, rng: np.random.Generator, foreign: np.ndarray) -> tuple:
    """Return the defective image and its boolean mask."""
    if kind == "scratch":
        mask = Image.new("L", (CROP, CROP), 0)
        p0 = rng.integers(10, CROP - 10, size=2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(40, 80)
        p1 = np.clip(p0 + length * np.array([np.cos(angle), np.sin(angle)]), 5, CROP - 5)
        ImageDraw.Draw(mask).line([tuple(p0), tuple(p1)], fill=255, width=int(rng.integers(2, 4)))
        alpha = _soft(mask, 0.6)
        value = 0.95 if rng.random() < 0.5 else 0.05
        out = img * (1 - alpha[..., None]) + value * alpha[..., None]
    elif kind in {"stain", "faint_stain"}:
        mask = _ellipse_mask(rng, 8, 16)
        strength = 0.75 if kind == "stain" else 0.35
        alpha = _soft(mask, 2.0) * strength
        colour = np.asarray([0.35, 0.22, 0.08], np.float32)
        out = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    elif kind == "hole":
        mask = _ellipse_mask(rng, 5, 10)
        alpha = _soft(mask, 1.0)
        out = img * (1 - 0.9 * alpha[..., None])
    elif kind == "foreign_texture":
        mask = _ellipse_mask(rng, 10, 18)
        alpha = _soft(mask, 1.5)
        out = img * (1 - alpha[..., None]) + foreign * alpha[..., None]
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    return np.clip(out, 0.0, 1.0), np.asarray(mask) > 127


def _save(arr: np.ndarray, path: Path) -> None:
    data = arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(data).save(path, format="PNG", optimize=False)


def _write_category(root: Path, name: str, n_train: int, n_test_normal: int, n_anomaly: int, seed: int) -> None:
    texture, tint = CATEGORIES[name]
    gray = _texture(texture)
    others = [CATEGORIES[c] for c in CATEGORIES if c != name]
    foreign_gray = _texture(others[0][0])
    rng = np.random.default_rng([seed, list(CATEGORIES).index(name)])
    train = root / "train" / name
    test = root / "test" / name
    for d in (train, test / "normal", test / "anomaly", test / "masks"):
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        _save(_colourise(_crop(gray, rng, TRAIN_REGION), tint, rng), train / f"{i:03d}.png")
    for i in range(n_test_normal):
        _save(_colourise(_crop(gray, rng, TEST_REGION), tint, rng), test / "normal" / f"{i:03d}.png")
    for i in range(n_anomaly):
        kind = DEFECTS[i % len(DEFECTS)]
        img = _colourise(_crop(gray, rng, TEST_REGION), tint, rng)
        foreign = _colourise(_crop(foreign_gray, rng, (0, 512)), others[0][1], rng)
        bad, mask = _add_defect(img, kind, rng, foreign)
        stem = f"{i:03d}_{kind}"
        _save(bad, test / "anomaly" / f"{stem}.png")
        _save(mask.astype(np.uint8) * 255, test / "masks" / f"{stem}.png")


def build_sample_dataset(
    data_root: str | Path = "data",
    categories: list[str] | None = None,
    n_train: int = 32,
    n_test_normal: int = 12,
    n_anomaly: int = 16,
    seed: int = 0,
    overwrite: bool = False,
) -> list[str]:
    """Write the sample dataset into ``data_root`` in the seed layout; return the categories written.

    Each category is built in a temporary folder and moved into place, so an interrupted build
    never leaves a half-written category behind. Existing categories are kept unless
    ``overwrite`` is set.
    """
    root = Path(data_root)
    names = categories or list(CATEGORIES)
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown sample categories {unknown}; choose from {list(CATEGORIES)}")
    written = []
    for name in names:
        targets = [root / "train" / name, root / "test" / name]
        if all(t.exists() for t in targets) and not overwrite:
            continue
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".sample-") as tmp:
            _write_category(Path(tmp), name, n_train, n_test_normal, n_anomaly, seed)
            for split in ("train", "test"):
                dest = root / split / name
                if dest.exists():
                    shutil.rmtree(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(tmp) / split / name, dest)
        written.append(name)
    return written


def _mosaic(images: list[np.ndarray]) -> np.ndarray:
    """Four equal images as a 2x2 mosaic (row-major)."""
    return np.concatenate([np.concatenate(images[:2], axis=1), np.concatenate(images[2:], axis=1)], axis=0)


def build_mosaics(sample_root: str | Path, out: str | Path, category: str = "Mosaic", crossing: bool = False) -> Path:
    """2x2 mosaics of the sample brick's crops in the seed layout under ``out``: a set for trying ``--tiles``.

    8 training mosaics of normal crops and 12 normal test mosaics. Each of the 16 defective test
    mosaics is a normal one with, by default, a whole defective crop as quarter ``q``
    (``NNN_qQ.png``: no defect crosses a 2x2 grid); with ``crossing``, the sample's defect (its
    mask grown by two pixels) pasted with its centre on the frame's centre, where a 2x2 grid cuts it
    into four (``NNN.png``). Masks in ``test/<category>/masks``. Returns ``out``.
    """
    from scipy import ndimage

    from ad_core.data.images import read_image
    from ad_core.data.layout import resolve_category

    src = resolve_category(sample_root, "Sample_brick", require_test=True)
    out = Path(out)
    train_dir, test_dir = out / "train" / category, out / "test" / category
    for d in (train_dir, test_dir / "normal", test_dir / "anomaly", test_dir / "masks"):
        d.mkdir(parents=True)
    crops = [read_image(p) for p in src.train]
    for i in range(len(crops) // 4):
        Image.fromarray(_mosaic(crops[4 * i : 4 * i + 4])).save(train_dir / f"{i:03d}.png")
    normals = [read_image(s.path) for s in src.test if s.label == 0]
    n = len(normals)
    for i in range(n):
        Image.fromarray(_mosaic([normals[(i + j) % n] for j in range(4)])).save(test_dir / "normal" / f"{i:03d}.png")
    for i, s in enumerate(s for s in src.test if s.label == 1):
        tiles = [normals[(i + j) % n] for j in range(4)]
        crop, defect = read_image(s.path), read_image(s.mask).max(axis=2) > 0
        if crossing:
            frame, mask = _mosaic(tiles), np.zeros((2 * crop.shape[0], 2 * crop.shape[1]), bool)
            ys, xs = np.nonzero(ndimage.binary_dilation(defect, iterations=2))
            fy, fx = ys - round(ys.mean()) + mask.shape[0] // 2, xs - round(xs.mean()) + mask.shape[1] // 2
            inside = (fy >= 0) & (fy < mask.shape[0]) & (fx >= 0) & (fx < mask.shape[1])
            frame[fy[inside], fx[inside]] = crop[ys[inside], xs[inside]]
            mask[fy[inside], fx[inside]] = True
            name = f"{i:03d}.png"
        else:
            place = i % 4
            tiles[place] = crop
            masks = [np.zeros(crop.shape[:2], bool) for _ in range(4)]
            masks[place] = defect
            frame, mask, name = _mosaic(tiles), _mosaic(masks), f"{i:03d}_q{place}.png"
        Image.fromarray(frame).save(test_dir / "anomaly" / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(test_dir / "masks" / name)
    return out
