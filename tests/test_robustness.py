"""Atomic run directories and clear errors for bad input; nothing already saved is changed."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from ad_core import evaluate, load_bundle, predict, train
from ad_core.errors import BundleError, ConfigError, DataError
from ad_core.fileio import load_npz, save_npz_atomic
from ad_core.models import TrainingStopped
from ad_core.rundir import staged


def _tiny_category(root, name="Tiny", n=6):
    src = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    (root / "train" / name).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.roll(src, i, axis=0)).save(root / "train" / name / f"{i}.png")
    return name


def _no_runs(models_root):
    return [p for p in models_root.rglob("*") if p.is_dir() and p.name[:1].isdigit()]


def test_ctrl_c_mid_training_leaves_nothing(tmp_path, sample_root):
    def interrupt(_row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("vae", "Sample_brick", sample_root, tmp_path, image_size=64, epochs=3, on_epoch=interrupt, progress=False)
    assert not _no_runs(tmp_path)
    assert not list(tmp_path.rglob(".*partial*"))


def test_stop_event_stops_training_and_leaves_nothing(tmp_path, sample_root):
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrainingStopped):
        train("padim", "Sample_brick", sample_root, tmp_path, image_size=64, stop=stop, progress=False)
    assert not _no_runs(tmp_path) and not list(tmp_path.rglob(".*partial*"))


def test_corrupt_training_image_is_named_and_no_run_is_written(tmp_path):
    data = tmp_path / "data"
    name = _tiny_category(data)
    (data / "train" / name / "zz_broken.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zz_broken\.png.*0 bytes"):
        train("padim", name, data, tmp_path / "models", image_size=64, progress=False)
    assert not _no_runs(tmp_path / "models")


def test_existing_run_is_never_overwritten(tmp_path):
    parent = tmp_path / "PaDiM" / "X"
    (parent / "20250101_000000").mkdir(parents=True)
    (parent / "20250101_000000" / "keep.txt").write_text("old")
    for expected in ("20250101_000000_2", "20250101_000000_3"):
        with staged(parent / "20250101_000000", "new") as stage:
            (stage.path / "new.txt").write_text("new")
        assert stage.final.name == expected and (stage.final / "new.txt").read_text() == "new"
    assert (parent / "20250101_000000" / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in parent.iterdir()) == [f"20250101_000000{s}" for s in ("", "_2", "_3")]


def test_bad_hyperparameters_fail_before_any_work(tmp_path, sample_root):
    with pytest.raises(ConfigError, match=r"coreset_ratio: 5\.0 is outside the allowed range \(0\.0001 to 1\)"):
        train("patchcore", "Sample_brick", sample_root, tmp_path, coreset_ratio=5)
    with pytest.raises(ConfigError, match=r"layers: .*layer9"):
        train("padim", "Sample_brick", sample_root, tmp_path, layers=["layer9"])
    with pytest.raises(ConfigError, match="unknown model"):
        train("resnet", "Sample_brick", sample_root, tmp_path)
    assert not _no_runs(tmp_path)


@pytest.fixture
def run_copy(evaluated, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(evaluated("padim")[0], dst)
    return dst


def _snapshot(run):
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_weights_from_another_run_are_refused(run_copy, trained):
    before = _snapshot(run_copy)
    shutil.copy(trained("patchcore") / "pytorch" / "model.pth", run_copy / "pytorch" / "model.pth")
    with pytest.raises(BundleError, match=r"model\.pth does not match the sha256"):
        load_bundle(run_copy)
    meta = json.loads((run_copy / "pytorch" / "meta.json").read_text())
    del meta["sha256"]
    (run_copy / "pytorch" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"model\.pth does not match the model described by meta\.json"):
        load_bundle(run_copy)
    assert (run_copy / "test_result" / "predictions.csv").read_bytes() == before[
        run_copy / "test_result" / "predictions.csv"
    ]


def test_stats_of_wrong_shape_are_refused(run_copy):
    stats = load_npz(run_copy / "pytorch" / "stats.npz")
    stats["mean"] = stats["mean"][:10]
    save_npz_atomic(run_copy / "pytorch" / "stats.npz", stats)
    meta = json.loads((run_copy / "pytorch" / "meta.json").read_text())
    meta["sha256"].pop("stats.npz")
    (run_copy / "pytorch" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"stats\.npz holds mean \(10,"):
        load_bundle(run_copy)


def test_memory_bank_of_wrong_width_is_refused(trained, tmp_path):
    run = tmp_path / "pc"
    shutil.copytree(trained("patchcore"), run)
    bank = load_npz(run / "pytorch" / "memory_bank.npz")["memory_bank"]
    save_npz_atomic(run / "pytorch" / "memory_bank.npz", {"memory_bank": bank[:, :10]})
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    meta["sha256"].pop("memory_bank.npz")
    (run / "pytorch" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"memory_bank\.npz holds an array of shape \(\d+, 10\)"):
        load_bundle(run)


def test_broken_meta_json_and_wrong_image_size(run_copy):
    meta_path = run_copy / "pytorch" / "meta.json"
    with pytest.raises(BundleError, match="trained for image_size 128, not 256"):
        load_bundle(run_copy, image_size=256)
    meta_path.write_text("{ not json")
    with pytest.raises(BundleError, match=r"meta\.json: not valid JSON"):
        load_bundle(run_copy)


def test_failed_test_changes_nothing(run_copy, tmp_path):
    before = _snapshot(run_copy)
    with pytest.raises(DataError):
        evaluate(run_copy, data_root=tmp_path / "missing", progress=False)
    assert _snapshot(run_copy) == before


def test_predict_skips_unreadable_images_and_reports_them(trained, sample_root, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(sample_root / "test" / "Sample_brick" / "anomaly", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG garbage")
    results, skipped = predict(trained("padim"), [folder])
    assert len(results) == 16 and [s[0] for s in skipped] == [str(folder / "broken.png")]
    with pytest.raises(DataError, match="between 0 and 1"):
        predict(trained("padim"), [folder], threshold=3.0)


def test_legacy_padim_min_max_spelling_is_accepted(run_copy):
    meta_path = run_copy / "pytorch" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["image_min"], meta["image_max"] = meta.pop("raw_image_min"), meta.pop("raw_image_max")
    meta_path.write_text(json.dumps(meta))
    bundle = load_bundle(run_copy)
    assert bundle.meta["raw_image_min"] == meta["image_min"]
    assert torch.is_tensor(bundle.model.module.gaussian.mean)


def test_building_padim_does_not_reset_the_callers_rng():
    from ad_core import create_model

    after = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        create_model("padim", image_size=64)
        after.append(torch.rand(3))
    assert not torch.equal(after[0], after[1])  # a reset to a fixed seed would make them equal
