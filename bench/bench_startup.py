"""Cold start: a fresh process, from the interpreter's start to the first scored image, ours against anomalib's.

What a Jetson or a line PC pays each time an inspection program, ``ad-core infer`` or the ROS node
starts (after a reboot, a model swap, a crash restart). For each model, every path runs in a new
Python process, ``--runs`` times, taking turns; the median is reported:

* ``ours (API)``: ``from ad_core.runtime import open_scorer``; open the engine folder ``convtrt``
  wrote (``model.onnx`` + ``meta.json``, PatchCore's ``memory_bank.npz``); read and score one image;
* ``ours (CLI)``: the whole ``ad-core infer <model> -e model.onnx -d image.png`` command, process
  start to exit, CSV written;
* ``anomalib torch``: ``anomalib.deploy.TorchInferencer`` on anomalib's own ``to_torch`` export of the
  same trained model, ``predict(image path)``; that export is a pickle, which anomalib loads only with
  ``TRUST_REMOTE_CODE=1``: the bench sets it for that child alone, on the file it has just written;
* ``anomalib openvino``: ``anomalib.deploy.OpenVINOInferencer`` on its ``to_openvino`` export,
  ``predict(image path)``;
* ``import torch``: a process that only imports torch, for scale.

Models are trained briefly on the bundled sample data at 256 px (start-up does not depend on
model quality). The VAE is not in anomalib, so only our paths run for it.

Usage: ``python bench/bench_startup.py [--models patchcore padim efficientad vae] [--runs 5]``.
Prints a table with ratios and writes ``bench/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
CHILD = {
    "ours_api": (
        "from ad_core.runtime import open_scorer\n"
        "from ad_core.data.images import read_image\n"
        "out = open_scorer(ENGINE)([read_image(IMAGE)])\n"
        "score = float(out.raw_score[0])\n"
    ),
    "anomalib_torch": (
        "from anomalib.deploy import TorchInferencer\n"
        "out = TorchInferencer(path=TORCH_PT, device='cpu').predict(IMAGE)\n"
        "score = float(out.pred_score.reshape(-1)[0])\n"
    ),
    "anomalib_openvino": (  # its export takes 256 px in [0, 1]; PatchCore's fixes the batch at 2 (bench_latency.py)
        "import numpy as np\n"
        "from PIL import Image\n"
        "from anomalib.deploy import OpenVINOInferencer\n"
        "inferencer = OpenVINOInferencer(path=OPENVINO_XML, device='CPU')\n"
        "image = np.asarray(Image.open(IMAGE).convert('RGB').resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255\n"
        "batch = inferencer.input_blob.partial_shape[0]\n"
        "copies = batch.get_length() if batch.is_static else 1\n"
        "out = inferencer.predict(image if copies == 1 else np.stack([image] * copies))\n"
        "score = float(np.asarray(out.pred_score).reshape(-1)[0])\n"
    ),
    "import_torch": "import torch\nscore = 0.0\n",
}


def child_script(body: str, paths: dict[str, str | int]) -> str:
    """A script timing itself from its first statement; the interpreter's own start is timed by the parent."""
    consts = "".join(f"{k} = {v!r}\n" for k, v in paths.items())
    return (
        "import time\n_t0 = time.perf_counter()\nimport warnings\nwarnings.filterwarnings('ignore')\n"
        + consts
        + body
        + "print('FIRST_SCORE_S', time.perf_counter() - _t0, score)\n"
    )


def run_fresh(argv: list[str], cwd: Path) -> tuple[float, float | None]:
    """(process wall seconds, in-process seconds to the first score or None)."""
    env = {**os.environ, "TRUST_REMOTE_CODE": "1"} if "TorchInferencer" in " ".join(argv) else None
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{proc.stderr[-2000:]}")
    inner = next((float(x.split()[1]) for x in proc.stdout.splitlines() if x.startswith("FIRST_SCORE_S")), None)
    return wall, inner


def prepare(model: str, tmp: Path, data: Path) -> dict[str, str]:
    """Train, convtrt, and anomalib's torch and OpenVINO exports of the same trained model."""
    from bench_latency import _lightning  # this folder is on sys.path: the script runs from it

    from ad_core import load_bundle, train
    from ad_core.convert import convtrt

    short = {"efficientad": {"epochs": 1, "distill_steps": 5}, "vae": {"epochs": 1}}.get(model, {})
    run = train(model, "Sample_brick", data, tmp / "models", image_size=SIZE, progress=False, **short)
    engine = convtrt(model, run / "pytorch" / "model.pth", run / "pytorch" / "meta.json", tmp / "engine" / model).onnx
    paths = {"ENGINE": str(engine.parent)}
    lit = _lightning(model, load_bundle(run))
    if lit is not None:
        export = tmp / "anomalib_export" / model
        paths["TORCH_PT"] = str(lit.to_torch(export))
        paths["OPENVINO_XML"] = str(lit.to_openvino(export, input_size=(SIZE, SIZE)))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["patchcore", "padim", "efficientad", "vae"])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per path (median reported)")
    args = parser.parse_args(argv)
    from ad_core.data.sample import build_sample_dataset

    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        build_sample_dataset(tmp / "data")
        image = str(sorted((tmp / "data" / "test" / "Sample_brick" / "anomaly").iterdir())[0])
        ad_core_cli = str(Path(sys.executable).with_name("ad-core"))
        for model in args.models:
            paths = {**prepare(model, tmp, tmp / "data"), "IMAGE": image, "SIZE": SIZE}
            commands = {"ours_api": [sys.executable, "-c", child_script(CHILD["ours_api"], paths)]}
            commands["ours_cli"] = [ad_core_cli, "infer", model, "-e", paths["ENGINE"] + "/model.onnx", "-d", image]
            for name in ("anomalib_torch", "anomalib_openvino"):
                if "TORCH_PT" in paths:
                    commands[name] = [sys.executable, "-c", child_script(CHILD[name], paths)]
            commands["import_torch"] = [sys.executable, "-c", child_script(CHILD["import_torch"], paths)]
            for name in commands:  # once each, untimed: the OS file cache and numba's cache are warm for all
                run_fresh(commands[name], tmp)
            walls: dict[str, list[float]] = {k: [] for k in commands}
            inner: dict[str, list[float]] = {k: [] for k in commands}
            for _ in range(args.runs):  # taking turns, so a busy moment hits every path alike
                for name, argv_ in commands.items():
                    wall, first = run_fresh(argv_, tmp)
                    walls[name].append(wall)
                    if first is not None:
                        inner[name].append(first)
            row = {"model": model}
            for name in commands:
                row[name] = statistics.median(walls[name])
                if inner[name]:
                    row[name + "_in_process"] = statistics.median(inner[name])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\ncold start to the first score, median of {args.runs} fresh processes, seconds ({os.cpu_count()} CPUs)")
    head = ("ours_api", "ours_cli", "anomalib_torch", "anomalib_openvino", "import_torch")
    print(f"{'model':<12}" + "".join(f"{h:>19}" for h in head) + f"{'torch/ours':>12}{'openvino/ours':>15}")
    for r in rows:
        cells = "".join(f"{r[h]:>19.2f}" if h in r else f"{'n/a':>19}" for h in head)
        ratios = "".join(
            f"{r[k] / r['ours_api']:>{w}.1f}x" if k in r else f"{'':>{w + 1}}"
            for k, w in (("anomalib_torch", 11), ("anomalib_openvino", 14))
        )
        print(f"{r['model']:<12}{cells}{ratios}")
    out = ROOT / "bench" / "results" / "startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"image_size": SIZE, "runs": args.runs, "rows": rows}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
