"""The ad-core command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image


def ad_core(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "ad_core.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_sample_train_test_predict(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    rc, out, err = ad_core("data", "sample", "--data_root", data)
    assert rc == 0, err
    rc, out, err = ad_core(
        "train",
        "--model",
        "padim",
        "--category",
        "Sample_grass",
        "--data_root",
        data,
        "--models_root",
        models,
        "--image_size",
        96,
        "--n_features",
        64,
        "--test",
    )
    assert rc == 0, err
    assert "image AUROC" in out
    run = next((models / "PaDiM" / "Sample_grass").iterdir())
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    assert meta["n_features"] == 64 and meta["image_size"] == 96 and meta["threshold_source"] == "test_f1"

    rc, out, err = ad_core("test", "--run", run, "--save_path", tmp_path / "elsewhere", "--no_images")
    assert rc == 0, err
    assert (tmp_path / "elsewhere" / "predictions.csv").is_file()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    anomaly = data / "test" / "Sample_grass" / "anomaly"
    rc, out, err = ad_core("predict", "--run", run, anomaly, bad, "--threshold", 0.5, "--save_path", tmp_path / "ov")
    assert rc == 0, err
    assert "normalised threshold in force: 0.5" in out
    assert "skipped" in err and "zero.png" in err
    assert len(list((tmp_path / "ov").glob("*_overlay.png"))) == 16

    rc, out, err = ad_core("predict", "--run", run, anomaly, "--image_size", 256)
    assert rc == 2 and "trained for image_size 96, not 256" in err


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    rc, _out, err = ad_core("train", "--model", "patchcore", "--category", "Nope", "--data_root", tmp_path)
    assert rc == 2 and err.startswith("error: category 'Nope' not found") and "Traceback" not in err
    rc, _out, err = ad_core("test", "--run", tmp_path)
    assert rc == 2 and "no meta.json found" in err
    (tmp_path / "train" / "C").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64)).save(tmp_path / "train" / "C" / f"{i}.png")
    rc, _out, err = ad_core("train", "--model", "padim", "--category", "C", "--data_root", tmp_path, "--tiles", "2")
    assert rc == 2 and err.startswith("error: tiles: expected ROWSxCOLS") and "Traceback" not in err
    models = tmp_path / "models"
    args = ("--category", "C", "--data_root", tmp_path, "--models_root", models, "--tile_overlap", "0.5")
    rc, _out, err = ad_core("train", "--model", "padim", *args)
    assert rc == 2 and "tile_overlap: 0.5 with tiles 1x1" in err and "give tiles as well" in err
    assert not models.exists()  # refused before any folder was made


def test_cli_lists_models_with_hyperparameters():
    rc, out, _ = ad_core("models")
    assert rc == 0
    for flag in ("--coreset_ratio", "--n_features", "--model_size", "--latent_dim", "--learning_rate"):
        assert flag in out
