"""``ad-core``: the command line over ad_core (train, test, predict, retrain, convtrt, infer, data, demo)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import ADCoreError, ConfigError

MODEL_NAMES = ("patchcore", "padim", "efficientad", "vae")
TRAIN_OPTIONS = ("epochs", "patience", "seed", "num_workers", "val_fraction", "weights", "allow_download")
FETCHABLE = "models:/NAME/VERSION from the MLflow registry also works"


def _add_hparam_flags(
    p: argparse.ArgumentParser, title: str = "hyperparameters (each model takes its own; see `ad-core models`)"
) -> None:
    from ad_core.models import get_spec, list_models

    seen: dict[str, Any] = {}
    for name in list_models():
        for param in get_spec(name).all_params():
            seen.setdefault(param.name, param)
    group = p.add_argument_group(title)
    for param in seen.values():
        group.add_argument(
            f"--{param.name}",
            nargs="+" if param.multiple else None,
            default=None,
            help=f"{param.help} (default {param.default})",
        )


def _mlflow_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--mlflow",
        nargs="?",
        const=True,
        default=None,
        metavar="URI",
        help=f"{what}; URI of a tracking server or store (default ./mlruns, or $MLFLOW_TRACKING_URI)",
    )


def _loader_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", "--batch_size", dest="batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--num_workers", type=int, default=0, help="image loading processes (Linux only; default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="ad-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on normal images into models/<Model>/<CATEGORY>/<stamp>/")
    p.add_argument("--model", default=None, help="patchcore | padim | efficientad | vae (default: --params')")
    p.add_argument("--category", default=None, help="category folder name, e.g. VisA_pipe_fryum or MVTec_bottle")
    p.add_argument("--params", default=None, help="best_params.yaml from `ad-core tune`; flags given here win")
    p.add_argument("--data_root", default=None, help="data root (seed or MVTec layout; default data)")
    p.add_argument("--models_root", default="models", help="where run directories go (default models)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs for trained models (EfficientAD, VAE)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--val_fraction", type=float, default=None, help="normal images held out for validation (0.1)")
    p.add_argument("--weights", default=None, help="explicit backbone weights file (.pth or .safetensors)")
    p.add_argument("--allow_download", action="store_true", default=None, help="allow downloading weights")
    p.add_argument("--test", action="store_true", help="run the performance test right after training")
    _mlflow_flag(p, "log parameters, losses, metrics, plots and the bundle to MLflow")
    p.add_argument("--batch", "--batch_size", dest="batch", type=int, default=None, help="images per batch (8)")
    p.add_argument("--num_workers", type=int, default=0, help="image loading processes (Linux only; default 0)")
    _add_hparam_flags(p)

    p = sub.add_parser("tune", help="Optuna hyperparameter search; writes <run>/param/best_params.yaml")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--category", required=True, help="category with normal and anomalous test images")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--models_root", default="models", help="where run directories go (default models)")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--search_space", default=None, help="YAML search space (default: the seed 001 table)")
    p.add_argument("--storage", default=None, help="Optuna storage URL or journal:FILE (default <category>/optuna.db)")
    p.add_argument("--study", default=None, help="study name (default <model>-<category>)")
    p.add_argument("--metric", choices=("auroc", "f1"), default="auroc", help="objective; the other breaks ties")
    p.add_argument("--run_dir", default=None, help="run directory for param/ (default: a new one, kept on resume)")
    p.add_argument("--no_prune", action="store_true", help="never prune trials of trained models")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs per trial (EfficientAD, VAE)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    p.add_argument("--val_fraction", type=float, default=0.1, help="normal images held out for validation")
    p.add_argument("--allow_download", action="store_true", default=None, help="allow backbones that need a download")
    _mlflow_flag(p, "log each trial as a nested MLflow run")
    _loader_flags(p)
    _add_hparam_flags(p, "fixed hyperparameters (every trial uses them; e.g. --image_size 128)")

    p = sub.add_parser("register", help="register a run's bundle in the MLflow model registry")
    p.add_argument("--run", required=True, help="run directory (or its pytorch/ folder)")
    p.add_argument("--name", required=True, help="registered model name, e.g. bottle_patchcore")
    _mlflow_flag(p, "tracking store (default ./mlruns)")

    p = sub.add_parser("test", help="performance test: AUROC, best F1, automatic threshold, pictures")
    p.add_argument("--run", required=True, help="run directory (or its pytorch/ folder)")
    p.add_argument("--data_root", default=None, help="data root (default: the one recorded in meta.json)")
    p.add_argument(
        "--save_path",
        "--save-path",
        dest="save_path",
        default=None,
        help="write results here instead of <run>/test_result",
    )
    p.add_argument("--no_images", action="store_true", help="skip per-image overlays")
    _mlflow_flag(p, "log metrics, plots and predictions to MLflow (the training's run when known)")
    _loader_flags(p)

    p = sub.add_parser("predict", help="score images or folders with a trained run")
    p.add_argument("--run", required=True, help="run directory (or its pytorch/ folder)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--threshold", type=float, default=None, help="normalised threshold 0-1 (default meta.json's)")
    p.add_argument(
        "--image_size", type=int, default=None, help="refuse to run unless the model was trained at this size"
    )
    p.add_argument("--save_path", default=None, help="also write heat-map overlays here")
    p.add_argument("--batch", type=int, default=8, help="images per batch")

    p = sub.add_parser("retrain", help="retrain a bundle on new normal images (seed retrain.py flags)")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--pretrained_pth", required=True, help="weights to start from (model.pth)")
    p.add_argument("--meta_json", required=True, help="the bundle's meta.json (left untouched)")
    p.add_argument("--category", required=True, help="category of the new normal images, e.g. VisA_pipe_fryum")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (EfficientAD, VAE)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8; EfficientAD always trains with 1)")
    p.add_argument("--out_dir", required=True, help="output folder, e.g. models/PatchCore/retrained")
    p.add_argument("--load_bank", default=None, help="PatchCore: extend this memory_bank.npz instead of rebuilding")
    p.add_argument("--load_stats", default=None, help="PaDiM: merge with this stats.npz instead of refitting")
    p.add_argument("--log", choices=("on", "off"), default="on", help="progress and out_dir/logs (default on)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _mlflow_flag(p, f"registry to fetch models:/ URIs from ({FETCHABLE} for the file flags)")

    p = sub.add_parser("convtrt", help="export ONNX and build a TensorRT engine (seed convtrt.py flags)")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--weights_pth", required=True, help="final weights (.pth)")
    p.add_argument("--meta_json", required=True, help="the bundle's meta.json")
    p.add_argument("--memory_bank", default=None, help="PatchCore: memory_bank.npz (default: meta.json's)")
    p.add_argument("--stats", default=None, help="PaDiM: stats.npz to embed (default: meta.json's)")
    p.add_argument("--opset", type=int, choices=(17, 18), default=17, help="ONNX opset (default 17)")
    p.add_argument("--fp16", action="store_true", help="build the engine in FP16")
    p.add_argument("--workspace", type=int, default=4096, help="TensorRT workspace in MiB (default 4096)")
    p.add_argument("--out_dir", required=True, help="output folder, e.g. models/PatchCore/engine")
    p.add_argument("--use_dla", action="store_true", help="build for the DLA (not on Jetson Orin Nano)")
    p.add_argument("--max_batch", type=int, default=8, help="largest batch the engine accepts (default 8)")
    _mlflow_flag(p, f"registry to fetch models:/ URIs from ({FETCHABLE} for the file flags)")

    p = sub.add_parser("infer", help="score an image or folder with an engine; writes result_<model>.csv")
    p.add_argument("model", choices=MODEL_NAMES, help="the model the engine holds")
    p.add_argument("-e", "--engine", required=True, help="model.plan, model.onnx, model.pth or a bundle folder")
    p.add_argument("-m", "--memory_bank", default=None, help="PatchCore: memory_bank.npz (default: beside engine)")
    p.add_argument("-d", "--data", required=True, help="an image file or a folder of images")
    p.add_argument("-i", "--image_size", type=int, default=None, help="refuse engines built for another size")
    p.add_argument("-t", "--threshold", type=float, default=None, help="raw score threshold (seed -t)")
    p.add_argument("--norm_threshold", type=float, default=None, help="normalised threshold 0-1 instead of -t")
    p.add_argument("--meta_json", default=None, help="meta.json when it is not beside the engine")
    p.add_argument(
        "--backend", choices=("onnxruntime", "openvino", "tensorrt", "torch"), default=None, help="force a backend"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: faster OpenVINO on CPUs with AVX512-BF16/AMX, scores within ~1%% (default fp32)",
    )
    p.add_argument("-o", "--out", default=None, help="CSV path (default result_<model>.csv here)")
    _mlflow_flag(p, f"registry to fetch models:/ URIs from ({FETCHABLE} for -e)")

    p = sub.add_parser("data", help="datasets: the bundled sample, VisA download and split")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("sample", help="build the offline sample dataset (textures with synthetic defects)")
    d.add_argument("--data_root", default="data")
    d.add_argument("--overwrite", action="store_true")
    d = dsub.add_parser("visa-download", help="download and extract VisA (seed download_VisA.sh)")
    d.add_argument("--download_dir", default="data/download")
    d = dsub.add_parser("visa-split", help="split one VisA category into the seed layout (seed move_VisA.sh)")
    d.add_argument("category", help="VisA object name, e.g. pipe_fryum")
    d.add_argument("--download_dir", default="data/download", help="folder with VisA_20220922.tar or VisA/")
    d.add_argument("--data_root", default="data")

    sub.add_parser("models", help="list models and their hyperparameters")

    p = sub.add_parser("demo", help="end to end on the sample data: build it, train and test every model")
    p.add_argument("--data_root", default="data")
    p.add_argument("--models_root", default="models")
    p.add_argument("--category", default="Sample_brick")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--models", nargs="+", default=None, help="subset of models (default: all)")
    p.add_argument("--tune_trials", type=int, default=4, help="Optuna trials of the PaDiM tuning step (0: skip)")
    return parser


def _hparams(args: argparse.Namespace) -> dict[str, Any]:
    from ad_core.models import get_spec, list_models

    names = {p.name for m in list_models() for p in get_spec(m).all_params()}
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


TRAIN_DEFAULTS = {"seed": 0, "patience": 5, "val_fraction": 0.1, "batch_size": 8}


def _cmd_train(args: argparse.Namespace) -> int:
    from ad_core.evaluate import evaluate
    from ad_core.train import train

    hparams, options = _hparams(args), {k: getattr(args, k) for k in TRAIN_OPTIONS}
    options["batch_size"] = args.batch
    model, category, data_root, run_dir = args.model, args.category, args.data_root, None
    if args.params:
        from ad_core.tune import load_best_params

        best = load_best_params(args.params)
        for flag, mine, theirs in (("--model", model, best.model), ("--category", category, best.category)):
            if mine is not None and theirs and mine.lower() != theirs.lower():
                raise ConfigError(f"{flag} {mine} contradicts --params {args.params} ({theirs})")
        model, category = model or best.model, category or best.category
        data_root = data_root or best.data_root
        hparams = {**best.hparams, **hparams}
        options = {**options, **{k: v for k, v in best.train.items() if options.get(k) is None}}
        run_dir = best.run_dir
    if not model or not category:
        raise ConfigError("train needs --model and --category (or --params best_params.yaml from `ad-core tune`)")
    options = {k: (TRAIN_DEFAULTS.get(k) if v is None else v) for k, v in options.items()}
    run = train(
        model,
        category,
        data_root or "data",
        args.models_root,
        run_dir=run_dir,
        mlflow=args.mlflow,
        **options,
        **hparams,
    )
    print(f"run directory: {run}")
    if args.test:
        _print_report(evaluate(run, batch_size=options["batch_size"], num_workers=args.num_workers, mlflow=args.mlflow))
    else:
        print(f"next: ad-core test --run {run}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from ad_core.models import TrainingStopped

    stop = threading.Event()

    def on_sigint(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("stopping the current trial (Ctrl-C again to abort at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = _run_tune(args, stop)
    except TrainingStopped:
        result = None
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop.is_set() or result is None:
        print("interrupted: finished trials are kept in the study; run the same command to resume", file=sys.stderr)
        return 130
    print(
        f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed trial(s) "
        f"in study {result.study_name!r}"
    )
    if result.best_params is None:
        print("no trial finished yet: run the same command again to continue the study")
        return 1
    print(f"best: trial {result.best_trial}, {args.metric} {result.best_value:.4f}: {result.best_params}")
    print(f"files: {result.run_dir / 'param'}")
    print(f"next: ad-core train --params {result.files['best_params']}")
    return 0


def _run_tune(args: argparse.Namespace, stop: threading.Event):
    from ad_core.tune import tune

    return tune(
        args.model,
        args.category,
        args.data_root,
        args.models_root,
        trials=args.trials,
        timeout=args.timeout,
        search_space=args.search_space,
        storage=args.storage,
        study=args.study,
        metric=args.metric,
        run_dir=args.run_dir,
        seed=args.seed,
        epochs=args.epochs,
        patience=args.patience,
        val_fraction=args.val_fraction,
        batch_size=args.batch,
        num_workers=args.num_workers,
        allow_download=args.allow_download,
        pruner=_no_pruner() if args.no_prune else None,
        mlflow=args.mlflow,
        stop=stop,
        **_hparams(args),
    )


def _no_pruner():
    import optuna

    return optuna.pruners.NopPruner()


def _cmd_register(args: argparse.Namespace) -> int:
    from ad_core.tracking import register

    info = register(args.run, args.name, args.mlflow)
    print(f"registered {info['name']} version {info['version']}: {info['uri']}")
    print(f"fetch it with e.g. ad-core infer <model> -e {info['uri']} -d <images>")
    return 0


def _print_report(r: dict[str, Any]) -> None:
    pix = f"{r['pixel_auroc']:.4f}" if r.get("pixel_auroc") is not None else "n/a"
    c = r["confusion"]
    print(
        f"{r['model']} / {r['category']}: image AUROC {r['image_auroc']:.4f}  best F1 {r['image_f1']:.4f}  "
        f"pixel AUROC {pix}\n  automatic threshold (raw) {r['image_threshold_auto']:.6g}  raw min/max "
        f"{r['raw_image_min']:.6g}/{r['raw_image_max']:.6g}\n  at normalised threshold {r['image_threshold']}: "
        f"TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}\n  results: {r['output']}"
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from ad_core.bundle import load_bundle
    from ad_core.data.images import read_image
    from ad_core.predict import predict
    from ad_core.viz import overlay, save_png

    bundle = load_bundle(args.run, image_size=args.image_size)
    results, skipped = predict(bundle, args.inputs, args.threshold, args.batch)
    thr = bundle.image_threshold if args.threshold is None else args.threshold
    print(f"normalised threshold in force: {thr}  (raw threshold {bundle.meta['image_threshold_auto']:.6g})")
    print(f"{'file':<50} {'raw_score':>12} {'normalized':>10}  prediction")
    for r in results:
        print(
            f"{r.file:<50} {r.raw_score:>12.6g} {r.normalized_score:>10.4f}  {'anomaly' if r.is_anomaly else 'normal'}"
        )
        if args.save_path:
            save_png(
                overlay(read_image(r.file), r.anomaly_map),
                Path(args.save_path) / f"{Path(r.file).stem}_overlay.png",
            )
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{sum(r.is_anomaly for r in results)} of {len(results)} images anomalous; {len(skipped)} skipped")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from ad_core.bundle import read_meta
    from ad_core.retrain import retrain

    out = retrain(
        args.model,
        args.pretrained_pth,
        args.meta_json,
        args.category,
        args.data_root,
        args.out_dir,
        epochs=args.epochs,
        batch_size=args.batch,
        load_bank=args.load_bank,
        load_stats=args.load_stats,
        log=args.log == "on",
        seed=args.seed,
    )
    meta = read_meta(out)
    r = meta["retrain"]
    print(f"retrained {args.model} into {out} ({r.get('mode', 'fine-tune')}, {r['new_images']} new images)")
    if "memory_bank_size" in r:
        print(f"  memory bank: {r.get('old_memory_bank_size', 0)} -> {r['memory_bank_size']} rows")
    if "n_samples" in r:
        print(f"  statistics over {r['n_samples']} images")
    if "test_image_auroc" in r:
        print(
            f"  test: image AUROC {r['test_image_auroc']:.4f}, best F1 {r['test_image_f1']:.4f}; raw statistics refreshed"
        )
    else:
        print("  no test images of both classes: raw score statistics inherited from the original meta.json")
    print(
        f"next: ad-core convtrt --model {args.model} --weights_pth {out / 'model.pth'} --meta_json {out / 'meta.json'}"
    )
    return 0


def _cmd_convtrt(args: argparse.Namespace) -> int:
    from ad_core.convert import convtrt

    result = convtrt(
        args.model,
        args.weights_pth,
        args.meta_json,
        args.out_dir,
        memory_bank=args.memory_bank,
        stats=args.stats,
        opset=args.opset,
        fp16=args.fp16,
        workspace=args.workspace,
        use_dla=args.use_dla,
        max_batch=args.max_batch,
    )
    print(result.message)
    print(f"  graph {'simplified (outputs checked)' if result.simplified else 'as exported'}; meta: {result.meta}")
    engine = result.plan or result.onnx
    bank = f" -m {result.memory_bank}" if result.memory_bank else ""
    print(f"next: ad-core infer {args.model} -e {engine}{bank} -d <images>")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from ad_core.infer import infer

    report = infer(
        args.model,
        args.engine,
        args.data,
        image_size=args.image_size,
        threshold=args.threshold,
        norm_threshold=args.norm_threshold,
        memory_bank=args.memory_bank,
        meta_json=args.meta_json,
        backend=args.backend,
        out=args.out,
        precision=args.precision,
    )
    print(report.summary())
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "sample":
        from ad_core.data.sample import CATEGORIES, build_sample_dataset

        written = build_sample_dataset(args.data_root, overwrite=args.overwrite)
        print(f"sample data in {args.data_root}: {', '.join(CATEGORIES)} ({len(written)} written, rest already there)")
    elif args.data_command == "visa-download":
        from ad_core.data.visa import download_visa

        print(f"VisA extracted to {download_visa(args.download_dir)}")
    else:
        from ad_core.data.visa import ARCHIVE_NAME, split_visa

        src = Path(args.download_dir)
        src = (
            src / "VisA" if (src / "VisA").is_dir() else (src / ARCHIVE_NAME if (src / ARCHIVE_NAME).is_file() else src)
        )
        counts = split_visa(args.category, src, args.data_root)
        print(f"VisA_{args.category}: {counts}")
    return 0


def _cmd_models(_: argparse.Namespace) -> int:
    from ad_core.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name} ({spec.dir_name}): {spec.description}")
        for p in spec.params:
            rng = (
                f" one of {list(p.choices)}" if p.choices else (f" in [{p.low}, {p.high}]" if p.low is not None else "")
            )
            print(f"  --{p.name:<16} default {p.default!s:<24}{rng}  {p.help}")
    return 0


# Short CPU schedules so the demo finishes in minutes; EfficientAD needs at least 256 px.
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "efficientad": {"image_size": 256, "epochs": 3, "distill_steps": 30},
    "vae": {"epochs": 40},
}


def _cmd_demo(args: argparse.Namespace) -> int:
    from ad_core.convert import convtrt
    from ad_core.data.sample import build_sample_dataset
    from ad_core.evaluate import evaluate
    from ad_core.infer import infer
    from ad_core.models import list_models
    from ad_core.train import train

    build_sample_dataset(args.data_root)
    anomalies = Path(args.data_root) / "test" / args.category / "anomaly"
    rows = []
    for name in args.models or list_models():
        kwargs = dict(DEMO_SETTINGS.get(name, {}))
        kwargs["image_size"] = max(args.image_size, kwargs.get("image_size", 0))
        print(f"== {name}: training on {args.category} ({kwargs})")
        run = train(name, args.category, args.data_root, args.models_root, **kwargs)
        report = evaluate(run)
        print(f"== {name}: edge path: convtrt -> {run / 'engine'}, infer on {anomalies}")
        bundle = run / "pytorch"
        engine = convtrt(name, bundle / "model.pth", bundle / "meta.json", run / "engine")
        edge = infer(name, engine.onnx, anomalies, out=run / "engine" / f"result_{name}.csv", progress=False)
        rows.append((name, report, run, edge))
    print(f"\nsummary: {args.category}, image size {args.image_size}")
    print(
        f"{'model':<12} {'image AUROC':>11} {'best F1':>8} {'pixel AUROC':>11} {'ONNX ms':>8} {'flagged':>8}  run directory"
    )
    for name, r, run, edge in rows:
        pix = f"{r['pixel_auroc']:.3f}" if r.get("pixel_auroc") is not None else "n/a"
        flagged = f"{sum(x['decision'] == 'anomaly' for x in edge.rows)}/{len(edge.rows)}"
        print(
            f"{name:<12} {r['image_auroc']:>11.3f} {r['image_f1']:>8.3f} {pix:>11} "
            f"{float(np.median(edge.latencies)):>8.1f} {flagged:>8}  {run}"
        )
    print("ONNX ms: median per-image latency of `ad-core infer` on the ONNX export; flagged: defect images caught")
    if args.tune_trials and "padim" in [name for name, *_ in rows]:
        _demo_tuning(args, next(r for name, r, *_ in rows if name == "padim"))
    return 0


def _demo_tuning(args: argparse.Namespace, default_report: dict[str, Any]) -> None:
    """Seed steps 2 -> 3 on PaDiM: a short Optuna study, then training with its best parameters."""
    from ad_core.evaluate import evaluate
    from ad_core.train import train
    from ad_core.tune import tune

    print(f"\n== tuning padim: {args.tune_trials} Optuna trials, then train --params with the best")
    result = tune(
        "padim",
        args.category,
        args.data_root,
        args.models_root,
        trials=args.tune_trials,
        study=f"demo-padim-{args.image_size}",
        image_size=args.image_size,
    )
    run = train("padim", args.category, args.data_root, args.models_root, run_dir=result.run_dir, **result.best_params)
    tuned = evaluate(run, save_images=False)
    print(
        f"PaDiM image AUROC: default {default_report['image_auroc']:.3f}, tuned {tuned['image_auroc']:.3f} "
        f"(trial {result.best_trial}: {result.best_params})\n  study files: {run / 'param'}"
    )


COMMANDS = {
    "train": _cmd_train,
    "tune": _cmd_tune,
    "register": _cmd_register,
    "predict": _cmd_predict,
    "retrain": _cmd_retrain,
    "convtrt": _cmd_convtrt,
    "infer": _cmd_infer,
    "data": _cmd_data,
    "models": _cmd_models,
    "demo": _cmd_demo,
}


# flags that may name a registered bundle (models:/NAME/VERSION) and the file each one means in it
MODEL_URI_FLAGS = {
    "retrain": {
        "pretrained_pth": "model.pth",
        "meta_json": "meta.json",
        "load_bank": "memory_bank.npz",
        "load_stats": "stats.npz",
    },
    "convtrt": {
        "weights_pth": "model.pth",
        "meta_json": "meta.json",
        "memory_bank": "memory_bank.npz",
        "stats": "stats.npz",
    },
    "infer": {"engine": "", "memory_bank": "memory_bank.npz", "meta_json": "meta.json"},
}


def _fetch_model_uris(args: argparse.Namespace) -> None:
    """Replace ``models:/...`` flag values by the files of the bundle fetched from the MLflow registry."""
    flags = MODEL_URI_FLAGS.get(args.command, {})
    if not any(str(getattr(args, k, "") or "").startswith("models:/") for k in flags):
        return
    from ad_core.tracking import resolve_path

    for key, filename in flags.items():
        setattr(args, key, resolve_path(getattr(args, key), filename, args.mlflow))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ad-core`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "test":
            from ad_core.evaluate import evaluate

            _print_report(
                evaluate(
                    args.run,
                    args.data_root,
                    args.save_path,
                    args.batch,
                    args.num_workers,
                    not args.no_images,
                    mlflow=args.mlflow,
                )
            )
            return 0
        _fetch_model_uris(args)
        return COMMANDS[args.command](args)
    except ADCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
