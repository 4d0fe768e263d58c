"""The PC-side commands: train, tune, register, test's report, predict."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ad_core.errors import ConfigError


def _hparams(args: argparse.Namespace) -> dict[str, Any]:
    from ad_core.models import get_spec, list_models

    names = {p.name for m in list_models() for p in get_spec(m).all_params()}
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainOptions flags given on the command line (None: not given)."""
    from ad_core.options import TrainOptions

    given = {k: getattr(args, k, None) for k in TrainOptions.names()}
    given["batch_size"] = args.batch
    if isinstance(given.get("merge_val"), str):
        given["merge_val"] = given["merge_val"] == "on"
    return {k: v for k, v in given.items() if v is not None}


def cmd_train(args: argparse.Namespace) -> int:
    """``ad-core train``."""
    from ad_core.evaluate import evaluate
    from ad_core.train import train

    hparams, options = _hparams(args), _options(args)
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
        options = {**best.train, **options}  # flags given next to --params override it
        run_dir = best.run_dir
    if not model or not category:
        raise ConfigError("train needs --model and --category (or --params best_params.yaml from `ad-core tune`)")
    if args.proxy_kinds and model != "auto":
        raise ConfigError("--proxy_kinds is for --model auto (the proxy that chooses the model)")
    if model == "auto":
        from ad_core.select import select

        chosen = select(
            category, data_root or "data", args.models_root, proxy_kinds=args.proxy_kinds, **options, **hparams
        )
        print(
            f"chosen: {chosen.best['candidate']} (proxy AUROC {chosen.best['auroc']:.3f}); why: {chosen.files['why']}"
        )
        model, run_dir = chosen.best["model"], chosen.run_dir
        hparams = {**chosen.best["hparams"], **hparams}
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
        batch = options.get("batch_size", 8)
        device = args.device or "auto"
        print_report(
            evaluate(run, batch_size=batch, num_workers=args.num_workers or 0, mlflow=args.mlflow, device=device)
        )
    else:
        print(f"next: ad-core test --run {run}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``ad-core tune``."""
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
        objective=args.objective,
        proxy_kinds=args.proxy_kinds,
        run_dir=args.run_dir,
        pruner=_no_pruner() if args.no_prune else None,
        mlflow=args.mlflow,
        **_options(args),
        stop=stop,
        **_hparams(args),
    )


def _no_pruner():
    import optuna

    return optuna.pruners.NopPruner()


def cmd_select(args: argparse.Namespace) -> int:
    """``ad-core select``: choose model and configuration on the proxy; ``--train`` trains the choice."""
    from ad_core.select import select

    result = select(
        args.category,
        args.data_root,
        args.models_root,
        models=args.models,
        wide=args.wide,
        proxy_kinds=args.proxy_kinds,
        **_options(args),
        **_hparams(args),
    )
    print(f"chosen: {result.best['candidate']} (proxy AUROC {result.best['auroc']:.3f})")
    print(f"files: {result.run_dir / 'param'}")
    if not args.train:
        print(f"next: ad-core train --params {result.files['best']}")
        return 0
    from ad_core.train import train

    run = train(
        result.best["model"],
        args.category,
        args.data_root,
        args.models_root,
        run_dir=result.run_dir,
        **_options(args),
        **{**result.best["hparams"], **_hparams(args)},
    )
    print(f"run directory: {run}")
    if args.test:
        from ad_core.evaluate import evaluate

        print_report(evaluate(run, batch_size=args.batch, device=args.device or "auto"))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """``ad-core register``."""
    from ad_core.tracking import register

    info = register(args.run, args.name, args.mlflow)
    print(f"registered {info['name']} version {info['version']}: {info['uri']}")
    print(f"fetch it with e.g. ad-core infer <model> -e {info['uri']} -d <images>")
    return 0


def print_report(r: dict[str, Any]) -> None:
    """The test report, a few lines."""
    pix = f"{r['pixel_auroc']:.4f}" if r.get("pixel_auroc") is not None else "n/a"
    c = r["confusion"]
    print(
        f"{r['model']} / {r['category']}: image AUROC {r['image_auroc']:.4f}  best F1 {r['image_f1']:.4f}  "
        f"pixel AUROC {pix}\n  automatic threshold (raw) {r['image_threshold_auto']:.6g}  raw min/max "
        f"{r['raw_image_min']:.6g}/{r['raw_image_max']:.6g}\n  at normalised threshold {r['image_threshold']}: "
        f"TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}\n  results: {r['output']}"
    )


def cmd_predict(args: argparse.Namespace) -> int:
    """``ad-core predict``."""
    from ad_core.bundle import load_bundle
    from ad_core.predict import predict, save_predictions

    bundle = load_bundle(args.run, image_size=args.image_size)
    results, skipped = predict(
        bundle, args.inputs, args.threshold, args.batch, device=args.device or "auto",
        pixel_threshold=args.pixel_threshold,
    )  # fmt: skip
    thr = bundle.image_threshold if args.threshold is None else args.threshold
    print(f"normalised threshold in force: {thr}  (raw threshold {bundle.meta['image_threshold_auto']:.6g})")
    print(f"{'file':<50} {'raw_score':>12} {'normalized':>10}  prediction  defects")
    for r in results:
        print(f"{r.file:<50} {r.raw_score:>12.6g} {r.score:>10.4f}  {r.decision:<10}  {len(r.regions())}")
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{sum(r.is_anomaly for r in results)} of {len(results)} images anomalous; {len(skipped)} skipped")
    if not args.no_save:
        out = Path(args.save_path) if args.save_path else bundle.run_dir / "inference"
        print(f"results: {save_predictions(results, out)}")
    return 0
