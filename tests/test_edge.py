"""The edge path (seed steps 3-5) through the CLI: train -> retrain -> convtrt -> infer, per model.

Each model is retrained on new normal images (mirrored training images: normal, but not seen),
exported, and scored by ``ad-core infer`` with ONNX Runtime; the scores must match the retrained
PyTorch model per image and the decisions must be identical.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import module_forward
from PIL import Image

from ad_core import list_models, load_bundle
from ad_core.cli import main
from ad_core.data.images import list_images
from ad_core.data.layout import resolve_category
from ad_core.fileio import load_npz, sha256
from ad_core.models import FitConfig, create_model
from ad_core.runtime import open_scorer
from ad_core.scoring import denormalize, image_auroc

# ONNX Runtime and PyTorch run different kernels; raw scores agree to about 1e-6 relative here.
RTOL = 1e-4
ARRAY_FILE = {"patchcore": "memory_bank.npz", "padim": "stats.npz"}
MERGE_FLAG = {"patchcore": "--load_bank", "padim": "--load_stats"}
# the retrained model must still separate the sample defects (EfficientAD/VAE get seconds of CPU)
AUROC_BAR = {"patchcore": 0.85, "padim": 0.85, "efficientad": 0.7, "vae": 0.7}
N_NEW = 8


@pytest.fixture(scope="module")
def new_root(sample_root, tmp_path_factory) -> Path:
    """New field images: mirrored training images as train/, the sample test split as test/."""
    root = tmp_path_factory.mktemp("field")
    (root / "train" / "Sample_brick").mkdir(parents=True)
    for p in list_images(sample_root / "train" / "Sample_brick")[:N_NEW]:
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "train" / "Sample_brick" / p.name)
    shutil.copytree(sample_root / "test" / "Sample_brick", root / "test" / "Sample_brick")
    return root


def _run(argv: list[str], capsys) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("model", list_models())
def test_train_retrain_convtrt_infer(model, trained, new_root, tmp_path, capsys, monkeypatch):
    bundle_dir = trained(model) / "pytorch"
    original_meta = sha256(bundle_dir / "meta.json")
    retrained, engine = tmp_path / "retrained", tmp_path / "engine"

    # -- retrain (merging where the model has a bank / statistics) --------------------------------
    argv = ["retrain", "--model", model, "--pretrained_pth", bundle_dir / "model.pth"]
    argv += ["--meta_json", bundle_dir / "meta.json", "--category", "Sample_brick", "--data_root", new_root]
    argv += ["--epochs", 1, "--batch", 4, "--out_dir", retrained, "--log", "off"]
    if model in MERGE_FLAG:
        argv += [MERGE_FLAG[model], bundle_dir / ARRAY_FILE[model]]
    out = _run(argv, capsys)
    assert "raw statistics refreshed" in out
    assert sha256(bundle_dir / "meta.json") == original_meta, "the original meta.json must stay untouched"
    new = load_bundle(retrained)
    assert new.meta["threshold_source"] == "test_f1"
    assert new.meta["retrain"]["new_images"] == N_NEW
    assert sha256(retrained / "model.pth") == new.meta["sha256"]["model.pth"]
    if model in ("efficientad", "vae"):  # fine-tuned: the weights moved
        old_state = torch.load(bundle_dir / "model.pth", weights_only=True)
        new_state = torch.load(retrained / "model.pth", weights_only=True)
        assert any(not torch.equal(old_state[k], new_state[k]) for k in old_state)

    # -- convtrt ------------------------------------------------------------------------------------
    argv = ["convtrt", "--model", model, "--weights_pth", retrained / "model.pth"]
    argv += ["--meta_json", bundle_dir / "meta.json", "--opset", 17, "--out_dir", engine]
    if model == "patchcore":
        argv += ["--memory_bank", retrained / "memory_bank.npz"]
    if model == "padim":
        argv += ["--stats", retrained / "stats.npz"]
    out = _run(argv, capsys)
    assert (engine / "model.onnx").is_file()
    if (engine / "model.plan").exists():
        assert "model.plan" in out
    else:
        assert "no TensorRT engine" in out  # said, never faked
    if model == "patchcore":  # the engine folder carries the bank that infer searches
        np.testing.assert_array_equal(
            load_npz(engine / "memory_bank.npz")["memory_bank"], load_npz(retrained / "memory_bank.npz")["memory_bank"]
        )
    elif model == "padim":
        # PaDiM's statistics live inside the graph; the copy beside it is for retraining on the device
        engine_meta = json.loads((engine / "meta.json").read_text())
        assert engine_meta["sha256"]["stats.npz"] == sha256(engine / "stats.npz")
        assert "embedded in the graph" in engine_meta["engine"]["stats"]
        bare = tmp_path / "bare_engine"
        bare.mkdir()
        for name in ("model.onnx", "meta.json"):
            shutil.copy(engine / name, bare / name)
        assert open_scorer(bare / "model.onnx").search is None  # it scores without stats.npz

    # -- infer: ONNX Runtime vs the retrained PyTorch model -----------------------------------------
    # convtrt was given the original meta.json, so its normalisation is the original one
    data = resolve_category(new_root, "Sample_brick")
    monkeypatch.chdir(tmp_path)
    rows = []
    for sub in ("normal", "anomaly"):
        out = _run(["infer", model, "-e", engine / "model.onnx", "-d", new_root / "test/Sample_brick" / sub], capsys)
        assert "threshold in force: raw" in out and "normalised, meta.json" in out
        assert (
            f"{model} on onnxruntime, bank search cells: " if model == "patchcore" else f"{model} on onnxruntime: "
        ) in out
        rows += _read_csv(tmp_path / f"result_{model}.csv")
    assert [Path(r["file"]).name for r in rows] == [s.path.name for s in data.test]
    assert all(float(r["latency_ms"]) > 0 for r in rows)
    engine_bundle = load_bundle(bundle_dir, weights=retrained / "model.pth", arrays=_arrays(model, retrained))
    # the reference: the retrained module's own forward (anomalib's, or the VAE's)
    ref = module_forward(engine_bundle, torch.stack([engine_bundle.preprocess(_rgb(s.path)) for s in data.test]))
    ref_scores = ref.pred_score.reshape(-1).numpy()
    raw = np.array([float(r["raw_score"]) for r in rows])
    np.testing.assert_allclose(raw, ref_scores, rtol=RTOL)
    expected = engine_bundle.normalize(ref_scores) >= engine_bundle.image_threshold
    # the threshold is an original test image's score; where the retrained model scores that image
    # the same (its nearest rows are old ones), it sits on the threshold and either side is right
    m = engine_bundle.meta
    raw_thr = denormalize(
        engine_bundle.image_threshold, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"]
    )
    clear = np.abs(ref_scores - raw_thr) > 2 * RTOL * np.abs(raw_thr)
    assert clear.sum() >= len(rows) - 1
    decisions = np.array([r["decision"] == "anomaly" for r in rows])
    np.testing.assert_array_equal(decisions[clear], expected[clear])
    labels = np.array([s.label for s in data.test])
    assert image_auroc(labels, raw) >= AUROC_BAR[model]


def _arrays(model: str, folder: Path) -> Path | None:
    return folder / ARRAY_FILE[model] if model in ARRAY_FILE else None


def _rgb(path: Path) -> np.ndarray:
    from ad_core.data.images import read_image

    return read_image(path)


def test_patchcore_bank_is_extended_or_rebuilt(trained, new_root, tmp_path, capsys):
    bundle_dir = trained("patchcore") / "pytorch"
    old = load_npz(bundle_dir / "memory_bank.npz")["memory_bank"]
    common = ["--model", "patchcore", "--pretrained_pth", bundle_dir / "model.pth", "--meta_json"]
    common += [bundle_dir / "meta.json", "--category", "Sample_brick", "--data_root", new_root, "--log", "off"]
    _run(["retrain", *common, "--out_dir", tmp_path / "ext", "--load_bank", bundle_dir / "memory_bank.npz"], capsys)
    _run(["retrain", *common, "--out_dir", tmp_path / "new"], capsys)
    ext = load_npz(tmp_path / "ext" / "memory_bank.npz")["memory_bank"]
    rebuilt = load_npz(tmp_path / "new" / "memory_bank.npz")["memory_bank"]
    meta = load_bundle(tmp_path / "ext").meta
    ratio, n_new = meta["coreset_ratio"], meta["retrain"]["n_embeddings"]
    added = int(n_new * ratio)
    assert ext.shape == (len(old) + added, old.shape[1])
    np.testing.assert_array_equal(ext[: len(old)], old)  # every old row kept, in order
    assert len(rebuilt) == added  # without --load_bank: the new images only
    # the added rows are new patch features: none of them is an old row
    assert not (np.abs(ext[len(old) :, None, :] - old[None, :, :]).sum(-1) == 0).any()


def test_padim_merge_equals_fit_on_all_images(sample_root):
    """--load_stats merges exactly: fit(A) merged with B == fit(A + B)."""
    train = resolve_category(sample_root, "Sample_brick").train
    a, b = train[:12], train[12:24]
    cfg = FitConfig(batch_size=8, progress=False)

    def fresh():
        model = create_model("padim", image_size=128)
        model.prepare_pretrained(cfg)
        return model

    first = fresh()
    first.fit(a, [], cfg)
    merged = fresh()
    merged.update(b, [], cfg, first.artifacts())
    both = fresh()
    both.fit(a + b, [], cfg)
    got, want = merged.artifacts(), both.artifacts()
    assert int(got["n_samples"]) == 24
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["covariance"], want["covariance"], rtol=1e-4, atol=1e-5)
    # the inverse amplifies float rounding by the condition number (~1e4): compare on its scale
    inv_scale = np.abs(want["inv_covariance"]).max()
    np.testing.assert_allclose(got["inv_covariance"], want["inv_covariance"], rtol=0, atol=1e-3 * inv_scale)
    # and it is not a replacement: the Gaussian of B alone differs
    only_b = fresh()
    only_b.fit(b, [], cfg)
    assert not np.allclose(only_b.artifacts()["mean"], want["mean"], rtol=1e-3)


def test_seed_stats_without_covariance_still_merge(sample_root):
    """A stats.npz with only mean + inv_covariance (the seed's) merges via meta.json's image count."""
    train = resolve_category(sample_root, "Sample_brick").train
    cfg = FitConfig(batch_size=8, progress=False)
    models = []
    for _ in range(3):
        m = create_model("padim", image_size=128)
        m.prepare_pretrained(cfg)
        models.append(m)
    first, merged, both = models
    first.fit(train[:10], [], cfg)
    seed_stats = {k: v for k, v in first.artifacts().items() if k in ("mean", "inv_covariance")}
    merged.update(train[10:20], [], cfg, {**seed_stats, "n_samples": np.asarray(10)})
    both.fit(train[:20], [], cfg)
    np.testing.assert_allclose(merged.artifacts()["mean"], both.artifacts()["mean"], rtol=1e-5, atol=1e-6)
    # the covariance is recovered from a float32 inverse (condition number ~ 1e4): close, not exact
    scale = np.abs(both.covariance).max()
    np.testing.assert_allclose(merged.covariance, both.covariance, rtol=0, atol=5e-3 * scale)
