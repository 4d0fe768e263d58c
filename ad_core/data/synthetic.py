"""Synthetic anomalies made from normal images, with exact masks: the proxy for labelled defects.

A new production line has good parts and no labelled defects. To choose a model and its settings
anyway (``ad-core select``, ``--model auto``, ``ad-core tune --objective proxy``), held-out normal images
are scored as they are and with one of these anomalies pasted in; the configuration that separates
them best is picked. The kinds follow the self-supervised anomaly literature:

* ``cutpaste``: a rectangle of the same image, colour-jittered, pasted elsewhere (CutPaste, Li et al. 2021);
* ``scar``: a thin, rotated strip of the same image (CutPaste-scar);
* ``blend``: a smooth noise-shaped region blended with a foreign texture (DRAEM, Zavrtanik et al. 2021);
* ``blob``: an ellipse darkened, brightened or filled with noise (stains, spots, inclusions).
* ``crack``: a thin wandering line, darker or brighter (hairline cracks, scratches); not in :data:`KINDS`
  (``--proxy_kinds crack`` asks for it).

Every function returns ``(image, mask)``: ``image`` is uint8 RGB of the input's size and differs
from the input only where ``mask`` is True (tests/test_synthetic.py checks this pixel for pixel).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

KINDS = ("cutpaste", "scar", "blend", "blob")
MIN_CHANGE = 12.0  # mean absolute change (grey levels) inside the mask; below it the anomaly is redrawn


def _rect_size(rng: np.random.Generator, h: int, w: int, area: tuple[float, float], aspect: tuple[float, float]):
    a = rng.uniform(*area) * h * w
    r = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
    ph = int(np.clip(round(np.sqrt(a * r)), 4, h - 2))
    pw = int(np.clip(round(np.sqrt(a / r)), 4, w - 2))
    return ph, pw


def _jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and per-channel colour jitter (CutPaste's ColorJitter, 0.1 each)."""
    x = patch.astype(np.float32)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
    x = x * rng.uniform(0.9, 1.1, size=(1, 1, 3))
    return np.clip(x, 0, 255)


def cutpaste(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A jittered rectangle of the image pasted at another place."""
    h, w = rgb.shape[:2]
    ph, pw = _rect_size(rng, h, w, (0.005, 0.05), (0.3, 3.3))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    dy, dx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = _jitter(rgb[sy : sy + ph, sx : sx + pw], rng)
    mask = np.zeros((h, w), bool)
    mask[dy : dy + ph, dx : dx + pw] = True
    out = rgb.astype(np.float32)
    out[dy : dy + ph, dx : dx + pw] = patch
    return _finish(rgb, out, mask)


def scar(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin strip of the image, rotated, pasted elsewhere (CutPaste-scar)."""
    h, w = rgb.shape[:2]
    length = int(rng.uniform(0.1, 0.3) * min(h, w))
    width = max(2, int(rng.uniform(0.01, 0.03) * min(h, w)))
    sy, sx = rng.integers(0, h - length + 1), rng.integers(0, w - width + 1)
    strip = _jitter(rgb[sy : sy + length, sx : sx + width], rng)
    angle = rng.uniform(-45, 45)
    strip_img = Image.fromarray(strip.astype(np.uint8)).rotate(angle, expand=True, resample=Image.BILINEAR)
    strip_mask = Image.new("L", (width, length), 255).rotate(angle, expand=True, resample=Image.NEAREST)
    sw, sh = strip_img.size
    dy, dx = rng.integers(0, max(1, h - sh + 1)), rng.integers(0, max(1, w - sw + 1))
    sh, sw = min(sh, h - dy), min(sw, w - dx)
    m = np.asarray(strip_mask)[:sh, :sw] > 127
    out = rgb.astype(np.float32)
    region = out[dy : dy + sh, dx : dx + sw]
    region[m] = np.asarray(strip_img, np.float32)[:sh, :sw][m]
    mask = np.zeros((h, w), bool)
    mask[dy : dy + sh, dx : dx + sw] = m
    return _finish(rgb, out, mask)


def smooth_noise_mask(shape: tuple[int, int], rng: np.random.Generator, coverage: tuple[float, float]) -> np.ndarray:
    """A blob-shaped region: thresholded smooth (value) noise, one connected region of the given area fraction."""
    h, w = shape
    scale = int(rng.choice([4, 8, 16]))
    grid = rng.standard_normal((max(2, h // scale + 2), max(2, w // scale + 2)))
    noise = ndimage.zoom(grid, (h / (grid.shape[0] - 1), w / (grid.shape[1] - 1)), order=3)[:h, :w]
    target = rng.uniform(*coverage)
    mask = noise > np.quantile(noise, 1.0 - target)
    labels, n = ndimage.label(mask)
    if n > 1:  # keep the largest region: one defect, not a scatter of specks
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return mask


def blend(
    rgb: np.ndarray, rng: np.random.Generator, texture: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A noise-shaped region blended (opacity 0.5-1) with a foreign texture (a scikit-image photo by default)."""
    h, w = rgb.shape[:2]
    mask = smooth_noise_mask((h, w), rng, (0.01, 0.06))
    tex = _foreign_texture(rng, (h, w)) if texture is None else _fit(texture, (h, w))
    beta = rng.uniform(0.5, 1.0)
    out = rgb.astype(np.float32)
    out[mask] = (1 - beta) * out[mask] + beta * tex[mask]
    return _finish(rgb, out, mask)


def blob(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse darkened, brightened, or filled with noise."""
    h, w = rgb.shape[:2]
    img = Image.new("L", (w, h), 0)
    ry, rx = rng.uniform(0.02, 0.08) * h, rng.uniform(0.02, 0.08) * w
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    ImageDraw.Draw(img).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    mask = np.asarray(img) > 127
    out = rgb.astype(np.float32)
    mode = rng.integers(0, 3)
    if mode == 0:
        out[mask] *= rng.uniform(0.2, 0.6)
    elif mode == 1:
        out[mask] = out[mask] + rng.uniform(60, 140)
    else:
        out[mask] = out[mask] * 0.3 + rng.uniform(0, 255, size=(int(mask.sum()), 3)) * 0.7
    return _finish(rgb, out, mask)


def _fit(texture: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    tex = texture if texture.ndim == 3 else np.repeat(texture[..., None], 3, -1)
    return np.asarray(Image.fromarray(tex.astype(np.uint8)).resize(shape[::-1], Image.BILINEAR), np.float32)


def _foreign_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random crop of one of scikit-image's photos (offline, no download), scaled to ``shape``."""
    import skimage.data

    name = str(rng.choice(["astronaut", "coffee", "chelsea", "rocket", "brick", "gravel", "grass", "camera"]))
    photo = np.asarray(getattr(skimage.data, name)())
    ch, cw = photo.shape[0] // 2, photo.shape[1] // 2
    y, x = rng.integers(0, photo.shape[0] - ch + 1), rng.integers(0, photo.shape[1] - cw + 1)
    return _fit(photo[y : y + ch, x : x + cw], shape)


def crack(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin wandering line, darker (a hairline crack, a scratch in shadow) or brighter (one catching the light).

    Width 0.4-1.2 % and length 15-50 % of the image's shorter side, bending a little at every step
    (a random walk of the direction). Real defects are often faint and one to three pixels wide at
    the model's size; the other kinds are broad and strong.

    Not among the default :data:`KINDS` (``--proxy_kinds crack``, ``ProxySet(..., kinds=...)``): on
    ELPV mono, cracks alone rank 13 configurations of both models with Spearman +0.87 against the
    test split (the four kinds: −0.16; pooled with them: +0.22), but they are one shape of defect,
    so they are asked for, not assumed (docs/benchmarks.md).
    """
    h, w = rgb.shape[:2]
    side = min(h, w)
    length = rng.uniform(0.15, 0.5) * side
    width = max(1, round(rng.uniform(0.004, 0.012) * side))
    steps = max(4, int(length / max(2.0, 0.04 * side)))
    step = length / steps
    y, x, angle = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w, rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(steps):
        angle += rng.normal(0.0, 0.35)
        x, y = x + step * np.cos(angle), y + step * np.sin(angle)
        if not (0 <= x < w and 0 <= y < h):  # it runs off the edge there, not along it
            break
        points.append((float(x), float(y)))
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).line(points, fill=255, width=width, joint="curve")
    mask = np.asarray(img) > 127
    out = rgb.astype(np.float32)
    if rng.random() < 0.7:  # faint: 15-33 % darker, or 20-45 grey levels brighter
        out[mask] *= rng.uniform(0.675, 0.85)
    else:
        out[mask] = out[mask] + rng.uniform(20, 45)
    return _finish(rgb, out, mask)


def _finish(rgb: np.ndarray, out: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 result; pixels outside the mask are the input's exactly; mask pixels that did not change are dropped."""
    result = np.where(mask[..., None], np.clip(np.rint(out), 0, 255), rgb).astype(np.uint8)
    changed = (result != rgb).any(-1)
    return result, mask & changed


GENERATORS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "cutpaste": cutpaste,
    "scar": scar,
    "blend": blend,
    "blob": blob,
    "crack": crack,
}


def make_anomaly(
    rgb: np.ndarray, kind: str, rng: np.random.Generator, tries: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """One anomaly of ``kind`` in ``rgb``; redrawn while it changes too little to count (a patch pasted on its twin)."""
    if kind not in GENERATORS:
        raise ValueError(f"synthetic anomaly kind {kind!r}: choose one of {', '.join(GENERATORS)}")
    rgb = np.ascontiguousarray(rgb[..., :3] if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, -1))
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    best = None
    for _ in range(tries):
        out, mask = GENERATORS[kind](rgb, rng)
        if grey:  # a grey camera's defect is grey too: colour would make it trivially easy to find
            out, mask = _finish(rgb, np.repeat(out.mean(-1, keepdims=True), 3, -1), mask)
        if not mask.any():
            continue
        change = float(np.abs(out.astype(np.int16) - rgb.astype(np.int16))[mask].mean())
        if change >= MIN_CHANGE:
            return out, mask
        if best is None or change > best[0]:
            best = (change, out, mask)
    if best is None:
        raise ValueError(f"could not place a {kind} anomaly in an image of shape {rgb.shape}")
    return best[1], best[2]


def synthetic_set(
    normals: list[np.ndarray], per_image: int = 1, kinds: tuple[str, ...] = KINDS, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``per_image`` anomalies for each normal image, cycling through ``kinds``: ``(image, mask, kind)`` rows."""
    rng = np.random.default_rng(seed)
    out = []
    n = 0
    for rgb in normals:
        for _ in range(per_image):
            kind = kinds[n % len(kinds)]
            image, mask = make_anomaly(rgb, kind, rng)
            out.append((image, mask, kind))
            n += 1
    return out
