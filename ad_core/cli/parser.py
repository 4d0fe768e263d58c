"""The ``ad-core`` command line: every sub-command and flag (seed 001's flags verbatim). Imports nothing heavy."""

from __future__ import annotations

import argparse
from typing import Any

from ad_core.models.registry import list_models

MODEL_NAMES = tuple(list_models())

FETCHABLE = "models:/NAME/VERSION from the MLflow registry also works"
SOURCES = "or a run directory, pytorch/ or engine folder, model.onnx / model.plan beside a meta.json"


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


def _proxy_kinds_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--proxy_kinds",
        nargs="+",
        default=None,
        metavar="KIND",
        help="synthetic defects the proxy makes: cutpaste scar blend blob (default) and crack "
        "(thin faint lines: name it alone where the defects are hairline cracks or scratches)",
    )


def _loader_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", "--batch_size", dest="batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--num_workers", type=int, default=0, help="image loading processes (Linux only; default 0)")


def _device_flags(p: argparse.ArgumentParser, precision: bool = True) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="auto | cpu | cuda | cuda:N (default auto: the GPU when PyTorch sees one, else the CPU)",
    )
    if precision:
        p.add_argument(
            "--precision",
            choices=("auto", "fp32", "amp"),
            default=None,
            help="training precision (default auto: mixed bf16/fp16 on CUDA, fp32 on the CPU)",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="ad-core",
        description="the command line over ad_core (train, select, tune, test, predict, retrain, convtrt, infer, data, demo)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on normal images into models/<Model>/<CATEGORY>/<stamp>/")
    p.add_argument(
        "--model",
        default=None,
        help="patchcore | padim | efficientad | vae, or auto: chosen without labelled defects (ad-core select) "
        "(default: --params')",
    )
    p.add_argument("--category", default=None, help="category folder name, e.g. VisA_pipe_fryum or MVTec_bottle")
    p.add_argument("--params", default=None, help="best_params.yaml from `ad-core tune`; flags given here win")
    p.add_argument("--data_root", default=None, help="data root (seed or MVTec layout; default data)")
    p.add_argument("--models_root", default="models", help="where run directories go (default models)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs for trained models (EfficientAD, VAE)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--val_fraction", type=float, default=None, help="normal images held out for validation (0.1)")
    p.add_argument(
        "--merge_val",
        choices=("on", "off"),
        default=None,
        help="after calibrating on the held-out images, add them to PatchCore's bank / PaDiM's statistics (default on)",
    )
    p.add_argument("--weights", default=None, help="explicit backbone weights file (.pth or .safetensors)")
    p.add_argument("--allow_download", action="store_true", default=None, help="allow downloading weights")
    p.add_argument("--test", action="store_true", help="run the performance test right after training")
    _proxy_kinds_flag(p)
    _mlflow_flag(p, "log parameters, losses, metrics, plots and the bundle to MLflow")
    p.add_argument("--batch", "--batch_size", dest="batch", type=int, default=None, help="images per batch (8)")
    p.add_argument("--num_workers", type=int, default=0, help="image loading processes (Linux only; default 0)")
    _device_flags(p)
    _add_hparam_flags(p)

    p = sub.add_parser(
        "select", help="choose model and configuration without labelled defects (proxy: synthetic anomalies)"
    )
    p.add_argument("--category", required=True, help="category folder name (only its normal images are used)")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--models_root", default="models", help="where the run directory goes (default models)")
    p.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=None, help="models to consider (default patchcore padim)"
    )
    p.add_argument(
        "--wide",
        action="store_true",
        help="also try each model's variants (other layers, backbones, searches; ~6 fits per model, not 1)",
    )
    _proxy_kinds_flag(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out images and anomalies (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs for trained models (EfficientAD, VAE)")
    p.add_argument("--train", action="store_true", help="train the chosen configuration into the run directory")
    p.add_argument("--test", action="store_true", help="with --train: run the performance test after training")
    _loader_flags(p)
    _device_flags(p)
    _add_hparam_flags(p, "fixed hyperparameters (every candidate uses them; e.g. --image_size 128)")

    p = sub.add_parser("tune", help="Optuna hyperparameter search; writes <run>/param/best_params.yaml")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--category", required=True, help="category (with labelled test images, or --objective proxy)")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--models_root", default="models", help="where run directories go (default models)")
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--search_space", default=None, help="YAML search space (default: the seed 001 table)")
    p.add_argument("--storage", default=None, help="Optuna storage URL or journal:FILE (default <category>/optuna.db)")
    p.add_argument("--study", default=None, help="study name (default <model>-<category>)")
    p.add_argument("--metric", choices=("auroc", "f1"), default="auroc", help="objective; the other breaks ties")
    p.add_argument(
        "--objective",
        choices=("test", "proxy"),
        default="test",
        help="test: the labelled test split (default); proxy: held-out normals + synthetic anomalies, "
        "for a category without labelled defects (it ranks models well, one model's fine settings less so: "
        "see docs/benchmarks.md)",
    )
    _proxy_kinds_flag(p)
    p.add_argument("--run_dir", default=None, help="run directory for param/ (default: a new one, kept on resume)")
    p.add_argument("--no_prune", action="store_true", help="never prune trials of trained models")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs per trial (EfficientAD, VAE)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (default 0)")
    p.add_argument("--val_fraction", type=float, default=0.1, help="normal images held out for validation")
    p.add_argument("--allow_download", action="store_true", default=None, help="allow backbones that need a download")
    _mlflow_flag(p, "log each trial as a nested MLflow run")
    _loader_flags(p)
    _device_flags(p)
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
    _device_flags(p, precision=False)

    p = sub.add_parser("predict", help="score images or folders with a trained run")
    p.add_argument("--run", required=True, help="run directory (or its pytorch/ folder)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--threshold", type=float, default=None, help="normalised threshold 0-1 (default meta.json's)")
    p.add_argument(
        "--image_size", type=int, default=None, help="refuse to run unless the model was trained at this size"
    )
    p.add_argument(
        "--pixel_threshold", type=float, default=None, help="normalised pixel threshold 0-1 for the defect regions"
    )
    p.add_argument(
        "--save_path",
        "--save-path",
        dest="save_path",
        default=None,
        help="where predictions.csv, overlays and masks go (default <run>/inference, as seed 003)",
    )
    p.add_argument("--no_save", action="store_true", help="print only; write no files")
    p.add_argument("--batch", type=int, default=8, help="images per batch")
    _device_flags(p, precision=False)

    p = sub.add_parser("retrain", help="retrain a bundle on new normal images (seed retrain.py flags)")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--pretrained_pth", default=None, help="weights to start from (default: the ones meta.json names)")
    p.add_argument("--meta_json", required=True, help=f"the bundle's meta.json (left untouched); {SOURCES}")
    p.add_argument("--category", required=True, help="category of the new normal images, e.g. VisA_pipe_fryum")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (EfficientAD, VAE)")
    p.add_argument("--batch", type=int, default=8, help="batch size (default 8; EfficientAD always trains with 1)")
    p.add_argument("--out_dir", required=True, help="output folder, e.g. models/PatchCore/retrained")
    p.add_argument("--load_bank", default=None, help="PatchCore: extend this memory_bank.npz instead of rebuilding")
    p.add_argument("--load_stats", default=None, help="PaDiM: merge with this stats.npz instead of refitting")
    p.add_argument("--log", choices=("on", "off"), default="on", help="progress and out_dir/logs (default on)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _device_flags(p)
    _mlflow_flag(p, f"registry to fetch models:/ URIs from ({FETCHABLE} for the file flags)")

    p = sub.add_parser("convtrt", help="export ONNX and build a TensorRT engine (seed convtrt.py flags)")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="patchcore | padim | efficientad | vae")
    p.add_argument("--weights_pth", default=None, help="final weights (.pth; default: the ones meta.json names)")
    p.add_argument("--meta_json", required=True, help=f"the bundle's meta.json; {SOURCES}")
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
    p.add_argument(
        "--pixel_threshold", type=float, default=None, help="normalised pixel threshold 0-1 for the defect regions"
    )
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

    p = sub.add_parser("data", help="datasets: the bundled sample, VisA, ELPV, magnetic tiles, Kolektor, ROS 2 bags")
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

    d = dsub.add_parser("elpv", help="ELPV solar cells into the seed layout as ELPV_mono and ELPV_poly")
    d.add_argument("--data_root", default="data")
    d.add_argument("--source", default=None, help="ELPV's data folder (default: the installed elpv-dataset package)")
    d.add_argument("--test_fraction", type=float, default=0.25, help="normal cells held out for testing (0.25)")
    d.add_argument("--seed", type=int, default=0, help="seed of the held-out normals (default 0)")

    d = dsub.add_parser(
        "magnetic-tile", help="magnetic-tile defects (a downloaded copy) into the seed layout as MT_tile"
    )
    d.add_argument("--source", required=True, help="the Magnetic-tile-defect-datasets folder (MT_Free/, MT_Crack/ ...)")
    d.add_argument("--data_root", default="data")
    d.add_argument("--test_fraction", type=float, default=0.25, help="normal tiles held out for testing (0.25)")
    d.add_argument("--seed", type=int, default=0, help="seed of the held-out normals (default 0)")
    d.add_argument("--per_defect", action="store_true", help="also one category per defect kind (MT_Crack ...)")

    d = dsub.add_parser(
        "kolektor", help="KolektorSDD or KolektorSDD2 (a downloaded copy) into the seed layout as Kolektor_SDD(2)"
    )
    d.add_argument(
        "--source", required=True, help="the KolektorSDD folder (kos01/ ...) or KolektorSDD2's (train/ test/)"
    )
    d.add_argument("--data_root", default="data")
    d.add_argument(
        "--test_fraction", type=float, default=0.25, help="KolektorSDD: normal images held out for testing (0.25)"
    )
    d.add_argument("--seed", type=int, default=0, help="KolektorSDD: seed of the held-out normals (default 0)")

    d = dsub.add_parser("from-bag", help="camera frames of a ROS 2 bag (.db3 / .mcap) into the seed layout")
    d.add_argument("bag", help="a rosbag2 folder, or a .mcap / .db3 file")
    d.add_argument("--topic", default=None, help="image topic (sensor_msgs/Image or CompressedImage)")
    d.add_argument("--category", default=None, help="category folder, e.g. Robot_cell3")
    d.add_argument("--data_root", default="data")
    d.add_argument(
        "--split",
        default="train",
        choices=("train", "test/normal", "test/anomaly", "review"),
        help="where the frames go (default train; review: the Review panel's queue)",
    )
    thin = d.add_mutually_exclusive_group()
    thin.add_argument("--every", type=int, default=None, help="keep every Nth frame")
    thin.add_argument("--hz", type=float, default=None, help="keep at most this many frames per second")
    d.add_argument("--start", type=float, default=None, help="skip frames before this many seconds into the bag")
    d.add_argument("--end", type=float, default=None, help="skip frames after this many seconds into the bag")
    d.add_argument(
        "--dedup", type=float, default=None, metavar="THRESH",
        help="drop frames whose mean grey difference to the last kept one is below THRESH (e.g. 2)",
    )  # fmt: skip
    d.add_argument("--roi", type=int, nargs=4, default=None, metavar=("X", "Y", "W", "H"), help="crop every frame")
    d.add_argument("--list", action="store_true", help="list the bag's topics, types and counts, and stop")

    p = sub.add_parser(
        "review", help="label field captures in data/review/<CATEGORY>/ (normal -> train, anomaly -> test)"
    )
    p.add_argument("--category", required=True, help="category whose review queue to work through")
    p.add_argument("--data_root", default="data", help="data root (default data)")
    p.add_argument("--normal_to", choices=("train", "test"), default="train", help="where normal frames go (train)")
    p.add_argument("--list", action="store_true", help="list the queue and stop")
    p.add_argument(
        "--label", nargs=2, metavar=("FILE", "LABEL"), default=None, help="label one frame: normal|anomaly|skip"
    )

    sub.add_parser("models", help="list models and their hyperparameters")

    p = sub.add_parser("demo", help="end to end on the sample data: build it, train and test every model")
    p.add_argument("--data_root", default="data")
    p.add_argument("--models_root", default="models")
    p.add_argument("--category", default="Sample_brick")
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--models", nargs="+", default=None, help="subset of models (default: all)")
    p.add_argument("--tune_trials", type=int, default=4, help="Optuna trials of the PaDiM tuning step (0: skip)")
    return parser
