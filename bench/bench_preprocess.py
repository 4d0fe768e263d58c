"""Preprocessing cost per frame: our float resize (the default), our 8-bit resize, anomalib's pre-processor.

The default ``preprocessing.resize`` is ``bilinear_float``: PIL resizes each channel as 32-bit floats,
giving the tensor anomalib's torchvision pre-processor gives (to 1e-5) without torch in the deployed
path. ``bilinear`` (runs before December 2026) resizes the uint8 image and rounds it, which erases
part of a faint defect's contrast. This times the three on frames of the sizes our users feed in
(ELPV cells, MVTec images, 30 Hz camera frames), decoded RGB uint8 to a normalised ``(3, S, S)``
float32 array, one frame at a time, taking turns; anomalib's side is what its inferencers do: a
uint8 tensor scaled to float, then its default ``Resize(antialias=True) + Normalize``.

Usage: ``python bench/bench_preprocess.py [--size 256] [--n 50]``; prints a table with ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import _time_interleaved

FRAMES = {"ELPV cell 300x300": (300, 300), "MVTec 900x900": (900, 900), "camera 640x480": (480, 640),
          "camera 1280x720": (720, 1280), "camera 1920x1080": (1080, 1920)}  # fmt: skip


def main() -> None:
    from anomalib.models.components.base.anomalib_module import AnomalibModule
    from torchvision.transforms.v2.functional import to_dtype

    from ad_core.preprocessing import Preprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    ours_float, ours_8bit = Preprocess(args.size), Preprocess(args.size, resize="bilinear")
    transform = AnomalibModule.configure_pre_processor((args.size, args.size)).transform

    def anomalib(rgb: np.ndarray) -> np.ndarray:
        return transform(to_dtype(torch.from_numpy(rgb).permute(2, 0, 1), torch.float32, scale=True)).numpy()

    print(f"preprocessing to {args.size} px, ms per frame (median of {args.n}), {torch.get_num_threads()} threads\n")
    print("| frame | ours float (default) | ours 8-bit (before) | anomalib | float / 8-bit | float / anomalib |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, shape in FRAMES.items():
        frames = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(4)]
        paths = {
            "float": lambda i, f=frames: ours_float.array(f[i % 4]),
            "8bit": lambda i, f=frames: ours_8bit.array(f[i % 4]),
            "anomalib": lambda i, f=frames: anomalib(f[i % 4]),
        }
        ms = _time_interleaved(paths, args.n)
        print(
            f"| {name} | {ms['float']:.2f} | {ms['8bit']:.2f} | {ms['anomalib']:.2f} | "
            f"{ms['float'] / ms['8bit']:.2f}x | {ms['float'] / ms['anomalib']:.2f}x |"
        )


if __name__ == "__main__":
    main()
