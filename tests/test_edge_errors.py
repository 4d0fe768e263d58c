"""Bad input on the edge path: foreign engines, wrong sizes, mismatched banks, broken images, bad flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ad_core.cli import main
from ad_core.convert import convtrt
from ad_core.errors import ADCoreError, BundleError, ConfigError
from ad_core.fileio import save_npz_atomic, sha256
from ad_core.infer import infer
from ad_core.retrain import retrain
from ad_core.runtime import open_scorer


@pytest.fixture(scope="module")
def engines(trained, tmp_path_factory):
    """ONNX engines (with meta.json and bank) of PatchCore and PaDiM, as convtrt writes them."""
    root = tmp_path_factory.mktemp("engines")
    out = {}
    for model in ("patchcore", "padim"):
        b = trained(model) / "pytorch"
        out[model] = convtrt(model, b / "model.pth", b / "meta.json", root / model).onnx
    return out


@pytest.fixture
def anomaly_dir(sample_root) -> Path:
    return sample_root / "test" / "Sample_brick" / "anomaly"


def test_engine_of_another_model_or_size_is_refused(engines, anomaly_dir, tmp_path):
    with pytest.raises(BundleError, match="holds a patchcore model, not padim"):
        infer("padim", engines["patchcore"], anomaly_dir, out=tmp_path / "r.csv")
    with pytest.raises(BundleError, match=r"takes 128 px images, not 256 \(-i / --image_size\)"):
        infer("padim", engines["padim"], anomaly_dir, image_size=256, out=tmp_path / "r.csv")
    # an ONNX file moved next to another model's meta.json
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(engines["patchcore"], mixed / "model.onnx")
    shutil.copy(engines["padim"].parent / "meta.json", mixed / "meta.json")
    with pytest.raises(BundleError, match=r"exported for model patchcore at image size 128; .* describes padim"):
        open_scorer(mixed / "model.onnx")
    assert not (tmp_path / "r.csv").exists()


def test_bank_of_another_width_is_refused(engines, anomaly_dir, tmp_path):
    bank = tmp_path / "bank.npz"
    save_npz_atomic(bank, {"memory_bank": np.zeros((50, 17), np.float32)})
    with pytest.raises(
        BundleError, match=r"memory bank rows have width 17, but the graph .* produces embeddings of width"
    ):
        infer("patchcore", engines["patchcore"], anomaly_dir, memory_bank=bank, out=tmp_path / "r.csv")
    save_npz_atomic(bank, {"something_else": np.zeros((50, 17), np.float32)})
    with pytest.raises(BundleError, match="no array named 'memory_bank'"):
        open_scorer(engines["patchcore"], memory_bank=bank)
    with pytest.raises(BundleError, match="--memory_bank is for PatchCore only"):
        open_scorer(engines["padim"], memory_bank=engines["patchcore"].parent / "memory_bank.npz")


def test_unreadable_image_is_skipped_and_reported(engines, anomaly_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    shutil.copytree(anomaly_dir, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    monkeypatch.chdir(tmp_path)
    rc = main(["infer", "padim", "-e", str(engines["padim"]), "-d", str(folder), "-i", "128"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "16 images scored" in out and "1 skipped" in out and "skipped " + str(folder / "broken.png") in out
    rows = (tmp_path / "result_padim.csv").read_text().splitlines()
    assert len(rows) == 17 and "broken.png" not in "".join(rows)


def test_not_an_engine_and_foreign_onnx(engines, tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        open_scorer(junk)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])],
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    with pytest.raises(BundleError, match="without ad_inspect metadata"):
        open_scorer(tmp_path / "foreign.onnx")


def test_plan_is_checked_before_tensorrt_is_needed(engines, tmp_path):
    """A plan that is not the one meta.json records is refused by hash; without TensorRT, said so."""
    folder = tmp_path / "eng"
    shutil.copytree(engines["padim"].parent, folder)
    (folder / "model.plan").write_bytes(b"some other engine")
    meta = json.loads((folder / "meta.json").read_text())
    meta["engine"].update(plan="model.plan", plan_sha256="0" * 64)
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"is not the engine .* was written with"):
        open_scorer(folder / "model.plan")
    meta["engine"]["plan_sha256"] = sha256(folder / "model.plan")
    (folder / "meta.json").write_text(json.dumps(meta))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BundleError, match="TensorRT is not installed here"):
            open_scorer(folder / "model.plan")


def test_thresholds_raw_and_normalised(engines, anomaly_dir, sample_root, tmp_path):
    normal = sample_root / "test" / "Sample_brick" / "normal"
    default = infer("padim", engines["padim"], normal, out=tmp_path / "a.csv", progress=False)
    assert default.threshold_source == "normalised, meta.json"
    same = infer("padim", engines["padim"], normal, norm_threshold=0.5, out=tmp_path / "b.csv", progress=False)
    assert [r["decision"] for r in same.rows] == [r["decision"] for r in default.rows]
    raw = np.array([r["raw_score"] for r in default.rows])
    cut = float(np.median(raw))
    by_raw = infer("padim", engines["padim"], normal, threshold=cut, out=tmp_path / "c.csv", progress=False)
    assert by_raw.threshold_source == "raw, from -t/--threshold" and by_raw.raw_threshold == cut
    assert [r["decision"] == "anomaly" for r in by_raw.rows] == (raw >= cut).tolist()
    with pytest.raises(ConfigError, match="not both"):
        infer("padim", engines["padim"], normal, threshold=1.0, norm_threshold=0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        infer("padim", engines["padim"], normal, norm_threshold=3.0)


def test_retrain_and_convtrt_refuse_bad_flags(trained, sample_root, tmp_path):
    b = trained("padim") / "pytorch"
    before = sha256(b / "meta.json")
    with pytest.raises(ConfigError, match="--load_bank is for PatchCore only"):
        retrain("padim", b / "model.pth", b / "meta.json", "Sample_brick", sample_root, tmp_path, load_bank=b / "x")
    with pytest.raises(ConfigError, match="the original bundle is never overwritten"):
        retrain("padim", b / "model.pth", b / "meta.json", "Sample_brick", sample_root, b)
    with pytest.raises(BundleError, match="describes a padim model, not vae"):
        retrain("vae", b / "model.pth", b / "meta.json", "Sample_brick", sample_root, tmp_path / "o")
    other = trained("patchcore") / "pytorch" / "model.pth"
    with pytest.raises(ADCoreError, match=r"model\.pth does not match"):
        convtrt("padim", other, b / "meta.json", tmp_path / "e")
    with pytest.raises(ConfigError, match="--stats is for PaDiM only"):
        convtrt("vae", b / "model.pth", b / "meta.json", tmp_path / "e", stats=b / "stats.npz")
    assert sha256(b / "meta.json") == before
    assert not (tmp_path / "e" / "model.onnx").exists()


def test_infer_reads_pth_and_bundle_folder_alike(engines, trained, sample_root, tmp_path):
    """The same images through .onnx (ONNX Runtime, OpenVINO), .pth and a run folder (PyTorch) score alike."""
    normal = sample_root / "test" / "Sample_brick" / "normal"
    bundle = trained("padim") / "pytorch"
    by_onnx = infer("padim", engines["padim"], normal, out=tmp_path / "a.csv", progress=False)
    by_pth = infer("padim", bundle / "model.pth", normal, out=tmp_path / "b.csv", progress=False)
    by_run = infer("padim", trained("padim"), normal, backend="torch", out=tmp_path / "c.csv", progress=False)
    by_ov = infer("padim", engines["padim"], normal, backend="openvino", out=tmp_path / "d.csv", progress=False)
    reports = (by_onnx, by_pth, by_run, by_ov)
    assert [r.backend for r in reports] == ["onnxruntime", "torch", "torch", "openvino"]
    raw = [np.array([r["raw_score"] for r in rep.rows]) for rep in reports]
    np.testing.assert_allclose(raw[1], raw[0], rtol=1e-4)
    np.testing.assert_array_equal(raw[1], raw[2])
    np.testing.assert_allclose(raw[3], raw[0], rtol=1e-4)


def test_engine_folder_opens_its_graph(engines):
    """A convtrt output folder can be given as is: its plan where TensorRT runs, else its ONNX."""
    scorer = open_scorer(engines["patchcore"].parent)
    assert scorer.source.name in ("model.onnx", "model.plan") and scorer.model == "patchcore"


def test_openvino_bf16_is_an_explicit_opt_in(engines, sample_root, tmp_path):
    """bf16 (OpenVINO) trades about 1 % of score accuracy for speed; only asked for, and only there."""
    folder = sample_root / "test" / "Sample_brick" / "anomaly"
    exact = infer("padim", engines["padim"], folder, out=tmp_path / "a.csv", progress=False)
    fast = infer(
        "padim", engines["padim"], folder, backend="openvino", precision="bf16", out=tmp_path / "b.csv", progress=False
    )
    assert fast.backend == "openvino (bf16)"
    a = np.array([r["raw_score"] for r in exact.rows])
    b = np.array([r["raw_score"] for r in fast.rows])
    np.testing.assert_allclose(b, a, rtol=3e-2)
    with pytest.raises(BundleError, match="precision bf16 is an OpenVINO option"):
        open_scorer(engines["padim"], precision="bf16")
    with pytest.raises(BundleError, match="choose one of fp32, bf16"):
        open_scorer(engines["padim"], backend="openvino", precision="int4")
