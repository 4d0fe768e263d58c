"""``ad-core demo``: the whole pipeline on the bundled sample data, with a summary table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def cmd_demo(args: argparse.Namespace) -> int:
    """``ad-core demo``."""
    from ad_core.convert import convtrt
    from ad_core.data.sample import build_sample_dataset
    from ad_core.evaluate import evaluate
    from ad_core.infer import infer
    from ad_core.models import get_spec, list_models
    from ad_core.rundir import RunDir
    from ad_core.train import train

    build_sample_dataset(args.data_root)
    anomalies = Path(args.data_root) / "test" / args.category / "anomaly"
    rows = []
    for name in args.models or list_models():
        kwargs = dict(get_spec(name).demo)  # short CPU schedules, from each model's spec
        kwargs["image_size"] = max(args.image_size, kwargs.get("image_size", 0))
        print(f"== {name}: training on {args.category} ({kwargs})")
        run = train(name, args.category, args.data_root, args.models_root, **kwargs)
        report = evaluate(run)
        print(f"== {name}: edge path: convtrt -> {run / 'engine'}, infer on {anomalies}")
        engine = convtrt(name, None, run, RunDir(run).engine)
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
