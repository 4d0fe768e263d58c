"""The anomaly map: patch scores resized to the image and blurred (PatchCore's head, PaDiM's graph).

anomalib's ``PatchcoreModel`` resizes the ``h x w`` patch scores to the image (``F.interpolate``,
nearest) and blurs them with ``GaussianBlur2d`` (sigma 4, a 33x33 kernel); that is the baseline,
run in torch on the CPU as its model does there. Ours runs in numpy after the search on every
backend (ONNX Runtime, OpenVINO, TensorRT): before, a nearest resize then a separable blur
(``gaussian_blur_numpy``); now ``nearest_resize_blur``, both steps as one small matrix per axis.
All three give the same map to float rounding (``tests/test_scoring.py``).

PaDiM's map is part of its exported graph: a bilinear resize and the same blur. Before, two
depthwise 1-D convolutions after the resize; now two constant matrices (``resize_blur``). The
second table runs just that part of the graph, exported to ONNX both ways, in ONNX Runtime (the
deployed CPU path), against anomalib's ``F.interpolate`` + ``GaussianBlur2d`` in torch.

Usage: ``python bench/bench_map.py [--size 256] [--patches 32] [--reps 200]``; prints ms per call and
ratios, batch 1 and 16 (PatchCore: on one thread, as the head runs, and on the default threads).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def timed(fn, reps: int) -> float:
    """Median ms of ``reps`` calls after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="image size (the map's side)")
    ap.add_argument("--patches", type=int, default=32, help="patch grid side (32 at 256 px for Lite0 blocks.2)")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from anomalib.models.components import GaussianBlur2d
    from threadpoolctl import threadpool_limits

    from ad_core.filters import gaussian_blur_numpy, nearest_resize, nearest_resize_blur

    blur = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33))
    print(f"patch scores {args.patches}x{args.patches} -> map {args.size}x{args.size}; ms per call (median)")
    for threads in (1, None):
        for batch in (1, 16):
            x = np.random.default_rng(0).random((batch, 1, args.patches, args.patches), dtype=np.float32)
            t = torch.from_numpy(x)
            reps = args.reps if batch == 1 else max(10, args.reps // 10)
            saved = torch.get_num_threads()
            with threadpool_limits(limits=threads), torch.no_grad():
                if threads:
                    torch.set_num_threads(threads)
                anomalib_ms = timed(lambda t=t: blur(F.interpolate(t, size=(args.size, args.size))), reps)
                torch.set_num_threads(saved)
                before_ms = timed(lambda x=x: gaussian_blur_numpy(nearest_resize(x, args.size)), reps)
                now_ms = timed(lambda x=x: nearest_resize_blur(x, args.size), reps)
            label = f"{threads} thread" if threads else "default threads"
            print(
                f"{label:16s} batch {batch:2d}: anomalib {anomalib_ms:8.3f}  ours before {before_ms:7.3f}  "
                f"ours now {now_ms:6.3f}  anomalib/now {anomalib_ms / now_ms:6.1f}x  before/now {before_ms / now_ms:5.1f}x"
            )
    padim_map(args, blur)


def padim_map(args, blur) -> None:
    """PaDiM's map inside its graph: the old and new torch ops exported to ONNX, run in ONNX Runtime."""
    import io

    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from ad_core.filters import blur as separable_blur
    from ad_core.filters import gaussian_kernel, resize_blur

    size = (args.size, args.size)

    class Before(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("kernel", gaussian_kernel(4.0))

        def forward(self, d):
            return separable_blur(F.interpolate(d, size=size, mode="bilinear", align_corners=False), self.kernel)

    class Now(torch.nn.Module):
        def forward(self, d):
            return resize_blur(d, size, 4.0, "bilinear")

    def session(module) -> ort.InferenceSession:
        buf = io.BytesIO()
        x = torch.zeros(1, 1, args.patches, args.patches)
        dyn = {"d": {0: "b"}, "m": {0: "b"}}
        torch.onnx.export(module, (x,), buf, input_names=["d"], output_names=["m"], dynamic_axes=dyn, dynamo=False)
        return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])

    before, now = session(Before()), session(Now())
    print("PaDiM's map in its graph (bilinear resize + blur), ONNX Runtime, default threads; ms per call (median)")
    for batch in (1, 16):
        x = np.random.default_rng(0).random((batch, 1, args.patches, args.patches), dtype=np.float32)
        t = torch.from_numpy(x)
        reps = args.reps if batch == 1 else max(10, args.reps // 10)
        a, b = before.run(None, {"d": x})[0], now.run(None, {"d": x})[0]
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max()), "the two graphs disagree"
        with torch.no_grad():
            anomalib_ms = timed(
                lambda t=t: blur(F.interpolate(t, size=size, mode="bilinear", align_corners=False)), reps
            )
        before_ms = timed(lambda x=x: before.run(None, {"d": x}), reps)
        now_ms = timed(lambda x=x: now.run(None, {"d": x}), reps)
        print(
            f"batch {batch:2d}: anomalib (torch) {anomalib_ms:8.3f}  ours before {before_ms:7.3f}  ours now {now_ms:6.3f}  "
            f"anomalib/now {anomalib_ms / now_ms:6.1f}x  before/now {before_ms / now_ms:5.1f}x"
        )


if __name__ == "__main__":
    main()
