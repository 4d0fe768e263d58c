"""MLflow tracking and the model registry against a real local store (SQLite + artifact folder)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from ad_core import evaluate, train
from ad_core.cli import main
from ad_core.fleet import cache_root, resolve_path, verify
from ad_core.runtime import open_scorer

CAT = "Sample_brick"
VAE_SMALL = {"image_size": 64, "enc_channels": [8, 16], "latent_dim": 16, "epochs": 6}


@pytest.fixture(scope="module")
def tracked(sample_root, tmp_path_factory):
    """A VAE trained and tested with MLflow logging into a fresh local store."""
    root = tmp_path_factory.mktemp("tracked")
    store = root / "mlruns"
    run = train("vae", CAT, sample_root, root / "models", progress=False, mlflow=str(store), **VAE_SMALL)
    report = evaluate(run, progress=False, mlflow=str(store))
    return run, report, store, MlflowClient(f"sqlite:///{store / 'mlflow.db'}")


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_train_and_test_are_logged_into_one_run(tracked, tmp_path):
    run, report, store, client = tracked
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    run_id = meta["mlflow"]["run_id"]
    assert meta["mlflow"]["tracking_uri"] == f"sqlite:///{store / 'mlflow.db'}"
    assert report["mlflow"]["run_id"] == run_id  # the test went into the training's run
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["latent_dim"] == "16" and logged.data.params["model"] == "vae"

    # per-epoch losses, exactly as in logs/history.csv
    with open(run / "logs" / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    for key in ("loss", "val_loss", "kl"):
        series = client.get_metric_history(run_id, key)
        assert [m.step for m in series] == [int(r["epoch"]) for r in history]
        np.testing.assert_allclose([m.value for m in series], [float(r[key]) for r in history], rtol=1e-9)

    m = logged.data.metrics
    assert m["test_image_auroc"] == pytest.approx(report["image_auroc"])
    assert m["test_image_f1"] == pytest.approx(report["image_f1"])
    assert m["test_image_threshold_auto"] == pytest.approx(report["image_threshold_auto"])
    assert m["score_anomaly_mean"] > m["score_normal_mean"]  # the seed 004 per-class statistics

    files = _artifacts(client, run_id)
    for name in (
        "pytorch/meta.json",
        "pytorch/model.pth",
        "logs/history.csv",
        "logs/loss_curve.png",
        "test_result/boxplot.png",
        "test_result/score_histogram.png",
        "test_result/roc_curve.png",
        "test_result/pr_curve.png",
        "test_result/reconstruction_comparison.png",
        "test_result/predictions.csv",
    ):
        assert name in files, name
    # the logged bundle is the current one: meta.json after the test (its threshold) is what MLflow holds
    local = client.download_artifacts(run_id, "pytorch/meta.json", str(tmp_path))
    logged_meta = json.loads(Path(local).read_text())
    assert logged_meta["image_threshold_auto"] == meta["image_threshold_auto"]
    assert logged_meta["threshold_source"] == "test_f1"


def test_plots_are_readable_pictures(tracked):
    run, _, _, _ = tracked
    for path in [run / "logs" / "loss_curve.png", *(run / "test_result").glob("*.png")]:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        assert img.shape[0] >= 300 and img.shape[1] >= 300, path
        # something is drawn: many distinct colours, not a blank canvas
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50, path
    recon = Image.open(run / "test_result" / "reconstruction_comparison.png")
    assert recon.size[1] > recon.size[0] * 0.7  # three rows of input / reconstruction / error


def test_register_fetch_and_use_for_infer_and_convtrt(tracked, sample_root, tmp_path, monkeypatch, capsys):
    run, _, store, client = tracked
    monkeypatch.setenv("AD_CORE_MODELS_CACHE", str(tmp_path / "cache"))
    args = ["--mlflow", str(store)]
    assert main(["register", "--run", str(run), "--name", "brick_vae", *args]) == 0
    assert main(["register", "--run", str(run), "--name", "brick_vae", *args]) == 0
    versions = sorted(int(v.version) for v in client.search_model_versions("name='brick_vae'"))
    assert versions == [1, 2]
    mv = client.get_model_version("brick_vae", "1")
    assert mv.run_id == json.loads((run / "pytorch" / "meta.json").read_text())["mlflow"]["run_id"]

    anomaly = sample_root / "test" / CAT / "anomaly"
    out = tmp_path / "result_vae.csv"
    assert main(["infer", "vae", "-e", "models:/brick_vae/1", "-d", str(anomaly), "-o", str(out), *args]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    scorer = open_scorer(run, backend="torch")
    direct = scorer([np.asarray(Image.open(anomaly / Path(r["file"]).name).convert("RGB")) for r in rows])
    np.testing.assert_allclose([float(r["raw_score"]) for r in rows], direct.raw_score, rtol=1e-4)

    # fetched once into the cache for this registry, verified, and labelled with where it came from
    cached = cache_root(str(store)) / ".registry" / "brick_vae" / "1"
    assert cached.parent.parent.parent.parent == tmp_path / "cache"
    assert json.loads((cached / "registry.json").read_text())["version"] == "1"
    verify(cached)
    (cached / "model.pth").touch()  # the same file, not downloaded again
    stamp = (cached / "model.pth").stat().st_mtime_ns
    assert main(["infer", "vae", "-e", "models:/brick_vae/1", "-d", str(anomaly), "-o", str(out), *args]) == 0
    assert (cached / "model.pth").stat().st_mtime_ns == stamp

    # the registry out of reach: a version fetched before still runs, one never fetched is refused clearly
    away = store.parent.with_name(store.parent.name + "_away")
    store.parent.rename(away)
    try:
        capsys.readouterr()
        offline_out = tmp_path / "offline.csv"
        rc = main(["infer", "vae", "-e", "models:/brick_vae/1", "-d", str(anomaly), "-o", str(offline_out), *args])
        assert rc == 0, capsys.readouterr().err
        assert "registry unreachable" in capsys.readouterr().err
        with open(offline_out) as fh:
            again = list(csv.DictReader(fh))
        assert [(r["file"], r["raw_score"]) for r in again] == [(r["file"], r["raw_score"]) for r in rows]
        assert main(["infer", "vae", "-e", "models:/brick_vae/2", "-d", str(anomaly), *args]) == 2
        assert "no cached copy is known" in capsys.readouterr().err
    finally:
        away.rename(store.parent)
    # the registry reached but not knowing the version: said so, not taken for an outage
    assert main(["infer", "vae", "-e", "models:/brick_vae/9", "-d", str(anomaly), *args]) == 2
    assert "does not resolve it" in capsys.readouterr().err

    # within one command, models:/NAME/latest names one version for every flag, even if one is registered meanwhile
    memo = {}
    meta_json = resolve_path("models:/brick_vae/latest", "meta.json", str(store), memo)
    assert main(["register", "--run", str(run), "--name", "brick_vae", *args]) == 0  # version 3
    assert resolve_path("models:/brick_vae/latest", "model.pth", str(store), memo).parent == meta_json.parent
    assert meta_json.parent.name == "2"
    assert resolve_path("models:/brick_vae/latest", "model.pth", str(store)).parent.name == "3"  # a new command

    engine = tmp_path / "engine"
    rc = main(
        [
            "convtrt",
            "--model",
            "vae",
            "--weights_pth",
            "models:/brick_vae/latest",
            "--meta_json",
            "models:/brick_vae/latest",
            "--out_dir",
            str(engine),
            *args,
        ]
    )
    assert rc == 0 and (engine / "model.onnx").is_file()

    retrained = tmp_path / "retrained"
    rc = main(
        [
            "retrain",
            "--model",
            "vae",
            "--pretrained_pth",
            "models:/brick_vae/2",
            "--meta_json",
            "models:/brick_vae/2",
            "--category",
            CAT,
            "--data_root",
            str(sample_root),
            "--epochs",
            "1",
            "--out_dir",
            str(retrained),
            "--log",
            "off",
            *args,
        ]
    )
    assert rc == 0 and json.loads((retrained / "meta.json").read_text())["retrain"]["new_images"] > 0


def test_bundle_logged_without_a_training_run(trained, tmp_path):
    """A run trained without MLflow is registered through a new MLflow run holding its bundle."""
    run = trained("padim")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    store = tmp_path / "store"
    assert main(["register", "--run", str(copy), "--name", "padim_brick", "--mlflow", str(store)]) == 0
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    mv = client.get_model_version("padim_brick", "1")
    assert {"pytorch/meta.json", "pytorch/model.pth", "pytorch/stats.npz"} <= _artifacts(client, mv.run_id)


def test_unreachable_store_and_unknown_model_fail_clearly(sample_root, tmp_path):
    models = tmp_path / "models"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ad_core.cli",
            "train",
            "--model",
            "padim",
            "--category",
            CAT,
            "--data_root",
            str(sample_root),
            "--models_root",
            str(models),
            "--mlflow",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "cannot reach the MLflow tracking store http://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not models.exists() or not any(p.is_file() for p in models.rglob("*"))

    rc = main(["infer", "vae", "-e", "models:/nope/3", "-d", str(sample_root), "--mlflow", str(tmp_path / "s")])
    assert rc == 2
    rc = main(["register", "--run", str(tmp_path), "--name", "x", "--mlflow", str(tmp_path / "s")])
    assert rc == 2


def test_test_with_unreachable_store_writes_nothing(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained("padim"), run)
    before = (run / "pytorch" / "meta.json").read_bytes()
    shutil.rmtree(run / "test_result", ignore_errors=True)
    assert main(["test", "--run", str(run), "--mlflow", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the MLflow tracking store" in capsys.readouterr().err
    assert (run / "pytorch" / "meta.json").read_bytes() == before
    assert not (run / "test_result").exists()
