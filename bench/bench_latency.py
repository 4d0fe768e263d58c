"""Per-image inference latency: our default runtime against anomalib's own paths, in one run.

For each model, on the same images (one at a time, as a camera delivers them, from the decoded
RGB uint8 image to score + map) this measures:

* ``ours``: ``ad_core.runtime.open_scorer(run)`` (ONNX Runtime; PatchCore's bank searched by the pruned
  exact :class:`ad_core.models.patchcore.knn.CellIndex`);
* ``ours faiss`` (PatchCore): the same with FAISS's brute-force ``IndexFlatL2`` for the bank;
* ``ours openvino``: the same graph on our OpenVINO backend (f32, so scores match the other backends),
  and with ``precision="bf16"`` (opt-in, scores within about 1 %);
* ``anomalib torch``: anomalib's Lightning module (pre-processor, torch model, post-processor) holding
  the same trained torch model, called as anomalib's ``TorchInferencer`` does;
* ``anomalib onnx``: anomalib's own ``to_onnx`` export of that module, run in ONNX Runtime;
* ``anomalib openvino``: anomalib's ``to_openvino`` export run by its ``OpenVINOInferencer`` (OpenVINO's
  default precision: bf16 on CPUs that have it, so its scores drift from the f32 ones by ~1 %);
* ``network alone``: the bare network forward in torch on a preprocessed tensor, no pre- or
  post-processing (PatchCore / PaDiM: the backbone feature extractor; EfficientAD: teacher, student
  and auto-encoder; VAE: encoder and decoder), the floor a torch implementation cannot go below.

Data: MVTec AD bottle from ``../shared/data`` when present (PatchCore's bank from 80 images at
ratio 0.1, as in ``bench_patchcore.py``), otherwise the bundled sample data. Model quality is not
the point here (EfficientAD / VAE train one short epoch); image size 256 for every model.

Usage: ``python bench/bench_latency.py [--models patchcore padim efficientad vae] [--n 30]``
Prints a table with ratios and writes ``bench/results/latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MVTEC = ROOT.parent / "shared" / "data" / "mvtec_ad"
SIZE = 256


def _time_interleaved(paths: dict, n: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each path, the paths taking turns image by image.

    Taking turns spreads any slowdown of a shared machine over all paths alike, so the ratios hold
    even when the absolute numbers drift.
    """
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(warmup + n):
        with torch.no_grad():
            for name, fn in paths.items():
                start = time.perf_counter()
                fn(i)
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def _data(tmp: Path) -> tuple[Path, str, list[Path]]:
    """A seed-layout data root (links) with 80 training images, and test images to time."""
    from ad_core.data.images import list_images

    if (MVTEC / "bottle").is_dir():
        train = list_images(MVTEC / "bottle" / "train" / "good")[:80]
        test = sorted(p for d in (MVTEC / "bottle" / "test").iterdir() for p in list_images(d))
        name = "Bench_bottle"
    else:
        from ad_core.data.sample import build_sample_dataset

        build_sample_dataset(tmp / "sample")
        train = list_images(tmp / "sample" / "train" / "Sample_brick")
        test = [
            *list_images(tmp / "sample/test/Sample_brick/normal"),
            *list_images(tmp / "sample/test/Sample_brick/anomaly"),
        ]
        name = "Bench_sample"
    for sub, files in (("full", train), ("few", train[:8])):
        folder = tmp / sub / "train" / name
        folder.mkdir(parents=True)
        for p in files:
            os.symlink(p.resolve(), folder / p.name)
    return tmp, name, test


def _train(model: str, tmp: Path, category: str) -> Path:
    from ad_core import train

    settings = {
        "patchcore": ("full", {}),
        "padim": ("full", {}),
        "efficientad": ("few", {"epochs": 1, "distill_steps": 5}),
        "vae": ("few", {"epochs": 1}),
    }
    root, kwargs = settings[model]
    return train(model, category, tmp / root, tmp / "models", image_size=SIZE, progress=False, **kwargs)


def _lightning(model: str, bundle):
    """anomalib's Lightning module around our trained torch model (None for the VAE: not in anomalib)."""
    from anomalib import models as am

    h = bundle.model.hparams
    if model == "patchcore":
        lit = am.Patchcore(
            backbone=h["backbone"], layers=h["layers"], pre_trained=False, coreset_sampling_ratio=h["coreset_ratio"]
        )
    elif model == "padim":
        lit = am.Padim(backbone=h["backbone"], layers=h["layers"], pre_trained=False, n_features=h["n_features"])
    elif model == "efficientad":
        lit = am.EfficientAd(model_size=h["model_size"])
    else:
        return None
    lit.model = bundle.model.module
    return lit.eval()


def _network_alone(model: str, module):
    if model in ("patchcore", "padim"):
        return module.feature_extractor
    if model == "efficientad":

        def nets(x):
            module.teacher(x)
            module.student(x)
            module.ae(x, x.shape[-2:])

        return nets
    return lambda x: module.decode(module.encode(x)[0])


def bench_model(model: str, tmp: Path, category: str, images: list[np.ndarray], n: int) -> dict:
    from ad_core import load_bundle
    from ad_core.runtime import open_scorer

    run = _train(model, tmp, category)
    bundle = load_bundle(run)
    row: dict = {"model": model}
    paths = {}
    ours = open_scorer(bundle)  # the default runtime: ONNX Runtime
    paths["ours"] = lambda i: ours([images[i % len(images)]])
    if model == "patchcore":  # the same runtime with FAISS's brute-force IndexFlatL2 instead of the pruned search
        ours_faiss = open_scorer(bundle, bank_search="faiss")
        paths["ours_faiss"] = lambda i: ours_faiss([images[i % len(images)]])
    try:
        ours_ov = open_scorer(bundle, "openvino")
        ours_bf16 = open_scorer(bundle, "openvino", precision="bf16")
        paths["ours_openvino"] = lambda i: ours_ov([images[i % len(images)]])
        paths["ours_openvino_bf16"] = lambda i: ours_bf16([images[i % len(images)]])
    except Exception as exc:  # the bench extra brings openvino; say so when it is missing
        row["ours_openvino_error"] = str(exc)[:200]

    def as_tensor(rgb):
        return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0)

    def resized(rgb):
        return np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.BILINEAR))

    lit = _lightning(model, bundle)
    if lit is not None:
        paths["anomalib_torch"] = lambda i: lit(as_tensor(images[i % len(images)]))
    else:  # our own torch module is the PyTorch path for the VAE
        torch_scorer = bundle.model.scorer()
        paths["torch_module"] = lambda i: torch_scorer.raw(bundle.preprocess(images[i % len(images)])[None])
    x = bundle.preprocess(images[0])[None]
    net = _network_alone(model, bundle.model.module)
    paths["network_alone"] = lambda i: net(x)
    if lit is not None:
        export = tmp / "anomalib_export" / model
        try:
            import onnxruntime as ort

            onnx_path = lit.to_onnx(export, input_size=(SIZE, SIZE))
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            # anomalib's PatchCore export fixes the batch at the example's size (2): a single camera
            # frame then has to be sent twice; we time exactly that and say so
            batch = session.get_inputs()[0].shape[0]
            copies = batch if isinstance(batch, int) else 1
            if copies > 1:
                row["anomalib_batch_fixed_at"] = copies
            paths["anomalib_onnx"] = lambda i: session.run(
                None, {name: as_tensor(resized(images[i % len(images)])).numpy().repeat(copies, 0)}
            )
            paths["anomalib_onnx"](0)
        except Exception as exc:  # report it, keep benchmarking the rest
            row["anomalib_onnx_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        try:
            from anomalib.deploy import OpenVINOInferencer

            xml = lit.to_openvino(export, input_size=(SIZE, SIZE))
            inferencer = OpenVINOInferencer(xml, device="CPU")
            n_in = row.get("anomalib_batch_fixed_at", 1)

            def ov_input(i):
                image = resized(images[i % len(images)]).astype(np.float32) / 255.0
                return image if n_in == 1 else np.stack([image] * n_in)

            paths["anomalib_openvino"] = lambda i: inferencer.predict(ov_input(i))
            paths["anomalib_openvino"](0)
        except Exception as exc:  # idem
            row["anomalib_openvino_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    row.update(_time_interleaved(paths, n))
    return row


def _fmt(value) -> str:
    return f"{value:8.1f}" if isinstance(value, float) else f"{'n/a':>8}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["patchcore", "padim", "efficientad", "vae"])
    parser.add_argument("--n", type=int, default=30, help="timed images per path (median reported)")
    args = parser.parse_args(argv)
    from ad_core.data.images import read_image

    torch.set_num_threads(os.cpu_count() or 1)
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # anomalib's OpenVINOInferencer writes an openvino_cache/ folder into the cwd
        tmp, category, test = _data(Path(d))
        images = [read_image(p) for p in test[:20]]
        rows = [bench_model(m, tmp, category, images, args.n) for m in args.models]
        os.chdir(here)
    print(
        f"\nper-image latency, median ms, {SIZE} px, {category}, {os.cpu_count()} CPU threads, torch {torch.__version__}"
    )
    head = (
        "ours",
        "ours_faiss",
        "ours_openvino",
        "ours_openvino_bf16",
        "anomalib_torch",
        "anomalib_onnx",
        "anomalib_openvino",
        "network_alone",
    )
    print(
        f"{'model':<12}"
        + "".join(f"{h:>19}" for h in head)
        + f"{'torch/ours':>12}{'ours/network':>14}{'torch/bf16':>12}"
    )
    for r in rows:
        torch_path = r.get("anomalib_torch") or r.get("torch_module")
        ratios = f"{torch_path / r['ours']:>11.2f}x{r['ours'] / r['network_alone']:>13.2f}x"
        if r.get("ours_openvino_bf16"):
            ratios += f"{torch_path / r['ours_openvino_bf16']:>11.2f}x"
        print(f"{r['model']:<12}" + "".join(f"{_fmt(r.get(h)):>19}" for h in head) + ratios)
        if "anomalib_batch_fixed_at" in r:
            print(
                f"  anomalib's export fixes the batch at {r['anomalib_batch_fixed_at']}: one frame is sent that often"
            )
        for key in ("ours_openvino_error", "anomalib_onnx_error", "anomalib_openvino_error"):
            if key in r:
                print(f"  {key}: {r[key]}")
    out = ROOT / "bench" / "results" / "latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"category": category, "image_size": SIZE, "rows": rows}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
