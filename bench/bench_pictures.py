"""Writing pictures: the test result's overlays and masks, and captured camera frames, against PIL's default.

``evaluate`` writes an overlay and a predicted mask per test image; the ROS node's capture writes the
frames it keeps. Both use PNG at zlib level 1 (``ad_core.fileio.PNG_COMPRESS_LEVEL``: lossless, larger
files) and ``evaluate`` writes from a few threads. anomalib's ``ImageVisualizer`` saves each picture
with PIL's default (level 6), one after another: that is the baseline here, on the same pictures.

Usage: ``python bench/bench_pictures.py [--data_root ../shared/data/mvtec_ad --category bottle] [--n 40]``
(falls back to the bundled sample data when MVTec AD is not there); prints tables with ratios.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MVTEC = ROOT.parent / "shared" / "data" / "mvtec_ad"
CAMERA = {"camera 640x480": (480, 640), "camera 1280x720": (720, 1280), "camera 1920x1080": (1080, 1920)}


def _samples(data_root: Path | None, category: str, n: int, tmp: Path):
    from ad_core.data.layout import resolve_category

    if data_root is None:
        if (MVTEC / category).is_dir():
            data_root = MVTEC
        else:
            from ad_core.data.sample import build_sample_dataset

            data_root, category = tmp / "sample", "Sample_brick"
            build_sample_dataset(data_root)
    test = resolve_category(data_root, category, require_test=True).test
    return [test[i] for i in np.linspace(0, len(test) - 1, min(n, len(test))).astype(int)], f"{data_root}/{category}"


def _anomalib_style(out: Path, samples, maps, threshold: float) -> None:
    """The same pictures, each saved with PIL's defaults in turn (as anomalib's ImageVisualizer saves)."""
    from ad_core.data.images import read_image
    from ad_core.filters import resize_map
    from ad_core.viz import mask_outline, overlay

    for sample, small in zip(samples, maps, strict=True):
        rgb = read_image(sample.path)
        pred = resize_map(small, rgb.shape[1], rgb.shape[0]) >= threshold
        sub = out / "images" / ("anomaly" if sample.label else "normal")
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"{sample.defect}_{sample.path.stem}"  # MVTec repeats file names across defect folders
        Image.fromarray(mask_outline(overlay(rgb, small), pred)).save(sub / f"{stem}_overlay.png")
        Image.fromarray(pred.astype(np.uint8) * 255).save(sub / f"{stem}_mask.png")


def _size(folder: Path, n: int) -> float:
    files = list(folder.rglob("*.png"))
    assert len(files) == 2 * n, f"{folder}: {len(files)} pictures, expected {2 * n}"
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    from ad_core.evaluate import _save_pictures
    from ad_core.fileio import PNG_COMPRESS_LEVEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_root", type=Path, default=None)
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--n", type=int, default=40, help="test images (spread over the test split)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        samples, where = _samples(args.data_root, args.category, args.n, tmp)
        from scipy.ndimage import gaussian_filter

        # smooth maps, as real anomaly maps are (noise would make every overlay incompressible)
        maps = [_unit(gaussian_filter(rng.random((64, 64), dtype=np.float32), 4)) for _ in samples]
        times: dict[str, list[float]] = {"ours": [], "anomalib-style": []}
        sizes = {}
        for r in range(args.repeat):  # taking turns, best of the repeats
            for name in times:
                out = tmp / f"{name}_{r}"
                t = time.perf_counter()
                if name == "ours":
                    _save_pictures(out, samples, maps, 0.7, progress=False)
                else:
                    _anomalib_style(out, samples, maps, 0.7)
                times[name].append(time.perf_counter() - t)
                sizes[name] = _size(out, len(samples))
        ours, base = min(times["ours"]), min(times["anomalib-style"])
        print(f"test-result pictures: {len(samples)} images of {where} (overlay + mask each), best of {args.repeat}")
        print("| writer | seconds | ms / image | MB written | ratio |")
        print("|---|---:|---:|---:|---:|")
        print(f"| anomalib-style (PIL default, serial) | {base:.2f} | {1e3 * base / len(samples):.0f} | "
              f"{sizes['anomalib-style']:.1f} | 1.00x |")  # fmt: skip
        print(f"| ours (level {PNG_COMPRESS_LEVEL}, threads) | {ours:.2f} | {1e3 * ours / len(samples):.0f} | "
              f"{sizes['ours']:.1f} | {base / ours:.2f}x faster |")  # fmt: skip

    print("\ncaptured frame, one PNG (ms, median of 10; the node's capture writes from one thread)")
    print("| frame | PIL default | ours | ratio | KB default / ours |")
    print("|---|---:|---:|---:|---:|")
    for name, (h, w) in CAMERA.items():
        frame = _camera_like(h, w, rng)
        row = {}
        for level in (6, PNG_COMPRESS_LEVEL):
            runs = []
            for _ in range(10):
                buf = io.BytesIO()
                t = time.perf_counter()
                Image.fromarray(frame).save(buf, format="PNG", compress_level=level)
                runs.append(time.perf_counter() - t)
            row[level] = (1e3 * float(np.median(runs)), len(buf.getvalue()) / 1e3)
        d, o = row[6], row[PNG_COMPRESS_LEVEL]
        print(f"| {name} | {d[0]:.1f} | {o[0]:.1f} | {d[0] / o[0]:.2f}x | {d[1]:.0f} / {o[1]:.0f} |")


def _unit(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / max(float(a.max() - a.min()), 1e-6)


def _camera_like(h: int, w: int, rng) -> np.ndarray:
    """A smooth scene with sensor noise: compresses like a camera frame, not like noise or a flat field."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    rgb = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=-1) + rng.normal(0, 3, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


if __name__ == "__main__":
    sys.exit(main())
