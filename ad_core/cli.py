"""``ad-core``: the command line over ad_core (train, test, predict, data, demo)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ad_core.errors import ADCoreError

TRAIN_OPTIONS = ("epochs", "patience", "seed", "num_workers", "val_fraction", "weights", "allow_download")


def _add_hparam_flags(p: argparse.ArgumentParser) -> None:
    from ad_core.models import get_spec, list_models

    seen: dict[str, Any] = {}
    for name in list_models():
        for param in get_spec(name).all_params():
            seen.setdefault(param.name, param)
    group = p.add_argument_group("hyperparameters (each model takes its own; see `ad-core models`)")
    for param in seen.values():
        group.add_argument(
            f"--{param.name}",
            nargs="+" if param.multiple else None,
            default=None,
            help=f"{param.help} (default {param.default})",
        )


def _loader_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", "--batch_size", dest="batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--num_workers", type=int, default=0, help="image loading processes (Linux only; default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="ad-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on normal images into models/<Model>/<CATEGORY>/<stamp>/")
    p.add_argument("--model", required=True, help="patchcore | padim | efficientad | vae")
    p.add_argument("--category", required=True, help="category folder name, e.g. VisA_pipe_fryum or MVTec_bottle")
    p.add_argument("--data_root", default="data", help="data root (seed or MVTec layout; default data)")
    p.add_argument("--models_root", default="models", help="where run directories go (default models)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs for trained models (EfficientAD, VAE)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val_fraction", type=float, default=0.1, help="normal images held out for validation")
    p.add_argument("--weights", default=None, help="explicit backbone weights file (.pth or .safetensors)")
    p.add_argument("--allow_download", action="store_true", default=None, help="allow downloading weights")
    p.add_argument("--test", action="store_true", help="run the performance test right after training")
    _loader_flags(p)
    _add_hparam_flags(p)

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
    return parser


def _hparams(args: argparse.Namespace) -> dict[str, Any]:
    from ad_core.models import get_spec, list_models

    names = {p.name for m in list_models() for p in get_spec(m).all_params()}
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from ad_core.evaluate import evaluate
    from ad_core.train import train

    run = train(
        args.model,
        args.category,
        args.data_root,
        args.models_root,
        batch_size=args.batch,
        **{k: getattr(args, k) for k in TRAIN_OPTIONS},
        **_hparams(args),
    )
    print(f"run directory: {run}")
    if args.test:
        _print_report(evaluate(run, batch_size=args.batch, num_workers=args.num_workers))
    else:
        print(f"next: ad-core test --run {run}")
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
    from ad_core.data.sample import build_sample_dataset
    from ad_core.evaluate import evaluate
    from ad_core.models import list_models
    from ad_core.train import train

    build_sample_dataset(args.data_root)
    rows = []
    for name in args.models or list_models():
        kwargs = dict(DEMO_SETTINGS.get(name, {}))
        kwargs["image_size"] = max(args.image_size, kwargs.get("image_size", 0))
        print(f"== {name}: training on {args.category} ({kwargs})")
        run = train(name, args.category, args.data_root, args.models_root, **kwargs)
        report = evaluate(run)
        rows.append((name, report, run))
    print(f"\nsummary: {args.category}, image size {args.image_size}")
    print(f"{'model':<12} {'image AUROC':>11} {'best F1':>8} {'pixel AUROC':>11}  run directory")
    for name, r, run in rows:
        pix = f"{r['pixel_auroc']:.3f}" if r.get("pixel_auroc") is not None else "n/a"
        print(f"{name:<12} {r['image_auroc']:>11.3f} {r['image_f1']:>8.3f} {pix:>11}  {run}")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "predict": _cmd_predict,
    "data": _cmd_data,
    "models": _cmd_models,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ad-core`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "test":
            from ad_core.evaluate import evaluate

            _print_report(
                evaluate(args.run, args.data_root, args.save_path, args.batch, args.num_workers, not args.no_images)
            )
            return 0
        return COMMANDS[args.command](args)
    except ADCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
