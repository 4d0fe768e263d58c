"""The ``ad-core`` command line: a thin caller of ad_core's functions.

``parser`` builds every sub-command (and imports nothing heavy: ``ad-core --help`` starts in a
fraction of a second); ``commands`` (PC side), ``edge`` (Jetson side) and ``demo`` hold what each
sub-command runs, imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ad_core.cli.parser import build_parser
from ad_core.errors import ADCoreError

__all__ = ["build_parser", "main"]

# sub-command -> "module:function" (imported when that sub-command runs)
COMMANDS = {
    "train": "ad_core.cli.commands:cmd_train",
    "tune": "ad_core.cli.commands:cmd_tune",
    "select": "ad_core.cli.commands:cmd_select",
    "register": "ad_core.cli.commands:cmd_register",
    "predict": "ad_core.cli.commands:cmd_predict",
    "retrain": "ad_core.cli.edge:cmd_retrain",
    "convtrt": "ad_core.cli.edge:cmd_convtrt",
    "infer": "ad_core.cli.edge:cmd_infer",
    "data": "ad_core.cli.edge:cmd_data",
    "models": "ad_core.cli.edge:cmd_models",
    "review": "ad_core.cli.edge:cmd_review",
    "demo": "ad_core.cli.demo:cmd_demo",
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
    from ad_core.fleet import resolve_path

    memo: dict = {}  # one version per URI for the whole command
    for key, filename in flags.items():
        setattr(args, key, resolve_path(getattr(args, key), filename, args.mlflow, memo))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ad-core`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "test":
            from ad_core.cli.commands import print_report
            from ad_core.evaluate import evaluate

            print_report(
                evaluate(
                    args.run,
                    args.data_root,
                    args.save_path,
                    args.batch,
                    args.num_workers,
                    not args.no_images,
                    mlflow=args.mlflow,
                    device=args.device or "auto",
                )
            )
            return 0
        _fetch_model_uris(args)
        module, _, name = COMMANDS[args.command].partition(":")
        return getattr(importlib.import_module(module), name)(args)
    except ADCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return 130
