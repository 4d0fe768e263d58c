"""GPU figures in one run (about a minute on an H200 with the sample data): training, TensorRT latency and throughput.

Run on a machine with an NVIDIA GPU, TensorRT and cuda-python (``pip install -e '.[dev,gpu]'``):

1. **Training on the GPU**, ours against anomalib's torch model on the same GPU:
   PatchCore's and PaDiM's fit (feature extraction + coreset / statistics; ImageNet weights loaded and
   one warm-up fit first) on ``--n_train`` images of MVTec bottle (``../shared/data``; the sample data
   otherwise or with ``--sample``, repeated to ``--n_train``), and the time per training step of
   EfficientAD-S (ours with mixed precision, anomalib's in fp32 as its Lightning module runs).
2. **Batch-1 latency and batch-16 throughput** of our TensorRT fp16 engines (``convtrt --fp16``, run by
   :class:`ad_core.runners.TrtRunner`: no torch) against anomalib's torch model on the GPU (fp32 and
   fp16 autocast). Where TensorRT is not installed (a machine with the GPU but without the 2 GB of
   TensorRT wheels) the row times our ``--backend torch`` scorer on CUDA instead and says so
   (``ours`` column ``torch_cuda``): the graph + head the node runs from a ``.pth``.
3. **EfficientAD-S** batch-1 fp16 against the 2.2 ms the paper reports on an RTX A6000 (TensorRT only).

Prints a table with ratios; writes ``bench/results/gpu.json``. Targets (issue "GPUs"): PatchCore fit
>= 10x anomalib's, EfficientAD-S fp16 batch 1 <= 1.5 ms and >= 1000 img/s at batch 16, every engine
>= 3x faster than anomalib's torch model at batch 1.

Usage: ``python bench/bench_gpu.py [--n_train 80] [--reps 50]``. ``--device cpu`` runs the same code on
the CPU with one repetition: a check of the script on a machine without a GPU, not a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_EFFICIENTAD_S_MS = 2.2  # Batzner et al. 2024, Table 4: batch 1, fp16, RTX A6000


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sync_timed(fn, reps: int) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls (after two warm-up calls), GPU synchronised."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def once(fn) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def data_root(tmp: Path, sample: bool = False) -> tuple[Path, str]:
    shared = ROOT.parent / "shared" / "data" / "mvtec_ad"
    if (shared / "bottle").is_dir() and not sample:
        return shared, "bottle"
    from ad_core.data.sample import build_sample_dataset

    build_sample_dataset(tmp / "data")
    return tmp / "data", "Sample_brick"


def training(root: Path, category: str, n_train: int, device: str = "cuda") -> dict:
    """Fit / step times on the GPU, ours against anomalib's torch models."""
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from ad_core.backbones import load_backbone_weights, resolve_weights
    from ad_core.data.dataset import ImageDataset, make_loader
    from ad_core.data.layout import resolve_category
    from ad_core.models import create_model
    from ad_core.options import TrainOptions
    from ad_core.train import prepare_fit

    data = resolve_category(root, category)
    # n_train images (the set repeated when smaller: the sample has 32), so the fit, not start-up, is timed
    paths = (data.train * -(-n_train // len(data.train)))[:n_train]
    layers = ["blocks.2", "blocks.4"]
    out = {}
    for model, extra in (("patchcore", {"coreset_ratio": 0.1}), ("padim", {})):

        def ours_fit(paths, model=model, extra=extra) -> float:
            opts = TrainOptions(device=device, progress=False, val_fraction=0.0)
            job = prepare_fit(model, category, root, opts, {"image_size": 256, **extra})
            job.model.prepare_pretrained(opts)  # ImageNet weights read from disk: not part of the fit
            return once(lambda: job.model.fit(paths, [], opts))

        def ref_fit(paths, model=model) -> float:
            if model == "patchcore":
                ref = PatchcoreModel(layers=layers, backbone="tf_efficientnet_lite0", pre_trained=False)
            else:
                ref = PadimModel(layers=layers, backbone="tf_efficientnet_lite0", pre_trained=False, n_features=100)
            ref = ref.to(device)
            load_backbone_weights(
                ref.feature_extractor.feature_extractor,
                resolve_weights("tf_efficientnet_lite0"),
                "tf_efficientnet_lite0",
            )
            preprocess = create_model(model, image_size=256).preprocess
            loader = make_loader(ImageDataset(paths, preprocess), 8)

            def fit():
                ref.train()
                embeddings = []
                with torch.no_grad():
                    for batch in loader:
                        out_ = ref(batch["image"].to(device))
                        if model == "padim":
                            embeddings.append(out_)
                if model == "patchcore":
                    ref.subsample_embedding(0.1)
                else:
                    ref.gaussian.fit(torch.cat(embeddings))

            return once(fit)

        ours_fit(paths[:8]), ref_fit(paths[:8])  # warm-up: CUDA context, cuDNN's choices, compiled kernels
        ours, theirs = ours_fit(paths), ref_fit(paths)
        out[model] = {"n_images": len(paths), "ours_s": ours, "anomalib_s": theirs, "ratio": theirs / ours}
    # trained models: time per optimiser step at batch 1 (EfficientAD)
    x1 = torch.rand(1, 3, 256, 256, device=device)
    eff = create_model("efficientad", image_size=256).to(device)
    m = eff.module.train()
    opt = torch.optim.Adam([*m.student.parameters(), *m.ae.parameters()], lr=1e-4)
    scaler_dev = eff.device

    def our_step():
        with scaler_dev.autocast():
            loss = sum(m(x1, x1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    ref_m = EfficientAdModel(teacher_out_channels=384, model_size="small").to(device).train()
    ref_opt = torch.optim.Adam([*ref_m.student.parameters(), *ref_m.ae.parameters()], lr=1e-4)

    def ref_step():
        loss = sum(ref_m(x1, x1))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

    steps = 20 if device != "cpu" else 1
    ours, theirs = sync_timed(our_step, steps), sync_timed(ref_step, steps)
    out["efficientad_step"] = {"ours_ms": ours, "anomalib_ms": theirs, "ratio": theirs / ours}
    return out


def inference(tmp: Path, root: Path, category: str, reps: int, device: str = "cuda") -> dict:
    """Our engines against anomalib's torch models on the GPU, batch 1 and 16.

    Ours is the TensorRT fp16 engine where TensorRT is installed, else the ``--backend torch`` scorer
    on the same GPU (``ours`` says which). anomalib's side is its torch module holding the same trained
    weights, in fp32 and under fp16 autocast.
    """
    from ad_core.bundle import load_bundle
    from ad_core.convert import convtrt, tensorrt_available
    from ad_core.runtime import open_scorer
    from ad_core.train import train

    trt_ok, why = tensorrt_available()
    if not trt_ok:
        print(f"TensorRT rows replaced by our torch scorer on {device}: {why}", file=sys.stderr)
    out = {}
    settings = {
        "patchcore": {"coreset_ratio": 0.1},
        "padim": {},
        "efficientad": {"epochs": 1, "distill_steps": 20},
        "vae": {"epochs": 1},
    }
    autocast = torch.autocast("cuda", dtype=torch.float16) if device != "cpu" else contextlib.nullcontext()
    for model, extra in settings.items():
        run = train(model, category, root, tmp / "models", image_size=256, progress=False, device=device, **extra)
        if trt_ok:
            engine = convtrt(model, None, run, tmp / f"engine_{model}", fp16=True, max_batch=16)
            scorer, ours = open_scorer(engine.plan), "trt_fp16"
            assert scorer.backend == "tensorrt"
        else:
            scorer, ours = open_scorer(run, backend="torch", device=device), f"torch_{device}"
        b1 = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
        b16 = np.repeat(b1, 16, axis=0)
        ours_1 = sync_timed(lambda b1=b1, scorer=scorer: scorer.raw(b1), reps)
        stages = {}  # where our batch-1 time goes (the graph's figure is its launch where the head waits for it)
        for _ in range(max(1, reps // 5)):
            scorer.raw(b1)
            for name, ms in scorer.timings.items():
                stages.setdefault(name, []).append(ms)
        ours_16 = sync_timed(lambda b16=b16, scorer=scorer: scorer.raw(b16), max(1, reps // 5))
        host_head = {}  # PatchCore: the same scorer with the head's work on the host, as before the head took tensors
        if getattr(scorer.runner, "keep_on_device", False):
            scorer.runner.keep_on_device = False
            host_head["host_head_b1_ms"] = sync_timed(lambda b1=b1, scorer=scorer: scorer.raw(b1), reps)
            scorer.runner.keep_on_device = True
        module = load_bundle(run).model.module.to(device).eval()
        t1 = torch.from_numpy(b1).to(device)
        with torch.no_grad():
            ref_fp32 = sync_timed(lambda module=module, t1=t1: module(t1), reps)
            with autocast:
                ref_fp16 = sync_timed(lambda module=module, t1=t1: module(t1), reps)
        out[model] = {
            "ours": ours,
            **({"bank_search": scorer.search.engine} if scorer.search is not None else {}),
            f"{ours}_b1_ms": ours_1,
            f"{ours}_b16_img_per_s": 16000.0 / ours_16,
            "stages_b1_ms": {name: round(statistics.median(ms), 3) for name, ms in stages.items()},
            **host_head,
            "anomalib_torch_fp32_b1_ms": ref_fp32,
            "anomalib_torch_fp16_b1_ms": ref_fp16,
            "ratio_vs_torch_fp32": ref_fp32 / ours_1,
            "ratio_vs_torch_fp16": ref_fp16 / ours_1,
        }
    if trt_ok:
        eff = out["efficientad"]["trt_fp16_b1_ms"]
        out["efficientad_s_vs_published"] = {"ours_ms": eff, "published_ms": PUBLISHED_EFFICIENTAD_S_MS}
    return out


def fmt(row: dict) -> str:
    return "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_train", type=int, default=80)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu: a check of this script, not a figure")
    parser.add_argument("--sample", action="store_true", help="the bundled sample data even where MVTec bottle is")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        args.reps = 1
    elif not torch.cuda.is_available():
        from ad_core.device import cuda_problem

        print(f"bench_gpu needs an NVIDIA GPU: {cuda_problem()}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, category = data_root(tmp, args.sample)
        gpu = torch.cuda.get_device_name(0) if args.device != "cpu" else "none (--device cpu)"
        result = {"gpu": gpu, "torch": torch.__version__, "category": category}
        result["training"] = training(root, category, args.n_train, args.device)
        print(f"training: {json.dumps(result['training'])}", flush=True)
        result["inference"] = inference(tmp, root, category, args.reps, args.device)
    print(f"GPU: {result['gpu']}  torch {result['torch']}  data: {category}")
    for name, row in result["training"].items():
        print(f"training {name:<18} " + fmt(row))
    for name, row in result["inference"].items():
        print(f"inference {name:<26} " + fmt(row))
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
