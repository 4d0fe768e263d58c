"""One scoring path and self-sufficient engine folders, from the command line.

* ``ad-core test`` and ``ad-core infer`` on the exported engine give the same raw scores, for every
  model: calibration, testing and deployment run the same graph and head.
* ``retrain`` and ``convtrt`` start from any form of a model (run directory, ``pytorch/`` folder,
  engine folder, ``model.onnx``, ``model.plan``) and chain: retrain -> convert -> retrain -> convert.
* Bad starting points fail with a message that names the file and how to get it, and write nothing.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ad_core.cli import main
from ad_core.errors import BundleError
from ad_core.fileio import sha256
from ad_core.models import list_models
from ad_core.retrain import retrain

CAT = "Sample_brick"


def raw_scores(csv_path: Path) -> dict[str, float]:
    with open(csv_path, newline="") as fh:
        return {
            f"{Path(r['file']).parent.name}/{Path(r['file']).name}": float(r["raw_score"]) for r in csv.DictReader(fh)
        }


@pytest.mark.parametrize("model", list_models())
def test_test_and_infer_on_the_engine_give_the_same_raw_scores(model, evaluated, sample_root, tmp_path):
    run, _ = evaluated(model)
    tested = raw_scores(run / "test_result" / "predictions.csv")
    engine = tmp_path / "engine"
    assert main(["convtrt", "--model", model, "--meta_json", str(run), "--out_dir", str(engine)]) == 0
    inferred = {}
    for sub in ("normal", "anomaly"):
        out = tmp_path / f"{sub}.csv"
        folder = sample_root / "test" / CAT / sub
        assert main(["infer", model, "-e", str(engine / "model.onnx"), "-d", str(folder), "--out", str(out)]) == 0
        inferred.update(raw_scores(out))
    assert set(inferred) == set(tested) and len(tested) >= 20
    for name, value in tested.items():
        assert inferred[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.fixture(scope="module")
def engine(trained, tmp_path_factory):
    """PaDiM's engine folder as `ad-core convtrt` writes it, and the run it came from."""
    root = tmp_path_factory.mktemp("sources")
    run = root / "run"
    shutil.copytree(trained("padim"), run)
    assert main(["convtrt", "--model", "padim", "--meta_json", str(run), "--out_dir", str(run / "engine")]) == 0
    return run


def nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    assert not [p for p in parent.iterdir() if ".partial-" in p.name], "a staging folder was left behind"


def test_every_form_of_a_model_retrains_and_converts_and_they_chain(engine, sample_root, tmp_path):
    run = engine
    plan = run / "engine" / "model.plan"  # a .plan stands for its folder: retraining needs no TensorRT
    plan.write_bytes(b"a TensorRT engine would be here")
    try:
        for i, source in enumerate([run, run / "pytorch", run / "engine", run / "engine" / "model.onnx", plan]):
            out = retrain("padim", None, source, CAT, sample_root, tmp_path / f"retrained_{i}", log=False)
            meta = json.loads((out / "meta.json").read_text())
            assert meta["retrain"]["from_weights_sha256"] == sha256(run / "pytorch" / "model.pth") or i >= 2
            assert (
                main(["convtrt", "--model", "padim", "--meta_json", str(source), "--out_dir", str(tmp_path / f"c{i}")])
                == 0
            )
    finally:
        plan.unlink()
    # the chain on the Jetson: each step starts from the folder the one before wrote
    source = run / "engine"
    for step in range(2):
        stats = source / "stats.npz"
        out = retrain("padim", None, source, CAT, sample_root, tmp_path / f"chain_r{step}", load_stats=stats, log=False)
        assert (
            main(
                ["convtrt", "--model", "padim", "--meta_json", str(out), "--out_dir", str(tmp_path / f"chain_e{step}")]
            )
            == 0
        )
        source = tmp_path / f"chain_e{step}"
        meta = json.loads((source / "meta.json").read_text())
        assert meta["sha256"]["model.pth"] == sha256(source / "model.pth")
        assert meta["engine"]["from_meta_json"] == str((out / "meta.json").resolve())
    n0 = json.loads((run / "engine" / "meta.json").read_text())["train_images"]
    merged = json.loads((tmp_path / "chain_r1" / "meta.json").read_text())["retrain"]["n_samples"]
    assert merged > n0  # the statistics grew twice: merged, not refitted


def test_engine_folder_whose_weights_were_deleted(engine, sample_root, tmp_path, capsys):
    folder = tmp_path / "engine"
    shutil.copytree(engine / "engine", folder)
    (folder / "model.pth").unlink()
    meta = json.loads((folder / "meta.json").read_text())
    meta["engine"]["from_weights"] = str(tmp_path / "gone" / "model.pth")  # its source is gone too
    (folder / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "retrained"
    with pytest.raises(BundleError, match=r"engine/model\.pth: the weights file named in meta\.json is missing.*"
                       r"written by `ad-core convtrt` from .*run `ad-core convtrt` again"):  # fmt: skip
        retrain("padim", None, folder, CAT, sample_root, out, log=False)
    nothing_written(tmp_path, out)
    rc = main(["convtrt", "--model", "padim", "--meta_json", str(folder), "--out_dir", str(tmp_path / "again")])
    err = capsys.readouterr().err
    assert rc == 2 and "model.pth" in err and "convtrt" in err and "Traceback" not in err
    nothing_written(tmp_path, tmp_path / "again")


def test_engine_folder_from_before_engines_carried_weights_follows_its_sha256(engine, sample_root, tmp_path):
    """An older engine folder names its source weights and their sha256: they are used while they match."""
    folder = tmp_path / "old_engine"
    shutil.copytree(engine / "engine", folder)
    for name in ("model.pth", "stats.npz"):
        (folder / name).unlink()
    out = retrain("padim", None, folder, CAT, sample_root, tmp_path / "r", log=False)
    assert (out / "model.pth").is_file()
    source = Path(json.loads((folder / "meta.json").read_text())["engine"]["from_weights"])
    backup = source.read_bytes()
    try:
        source.write_bytes(backup + b"changed")
        with pytest.raises(
            BundleError, match=r"old_engine/model\.pth: the weights file named in meta\.json is missing"
        ):
            retrain("padim", None, folder, CAT, sample_root, tmp_path / "r2", log=False)
    finally:
        source.write_bytes(backup)
    nothing_written(tmp_path, tmp_path / "r2")


def test_checksum_mismatch_in_an_engine_folder(engine, sample_root, tmp_path, capsys):
    folder = tmp_path / "engine"
    shutil.copytree(engine / "engine", folder)
    with open(folder / "stats.npz", "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "retrained"
    with pytest.raises(BundleError, match=r"stats\.npz does not match the sha256 recorded in meta\.json"):
        retrain("padim", None, folder, CAT, sample_root, out, log=False)
    nothing_written(tmp_path, out)
    rc = main(
        ["convtrt", "--model", "padim", "--meta_json", str(folder / "model.onnx"), "--out_dir", str(tmp_path / "c")]
    )
    assert rc == 2 and "does not match the sha256" in capsys.readouterr().err
    nothing_written(tmp_path, tmp_path / "c")


def test_a_plan_without_tensorrt(engine, sample_root, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: tests/test_gpu.py runs the plan")
    except ImportError:
        pass
    folder = tmp_path / "engine"
    shutil.copytree(engine / "engine", folder)
    (folder / "model.plan").write_bytes(b"built on a Jetson")
    meta = json.loads((folder / "meta.json").read_text())
    meta["engine"].update(plan="model.plan", plan_sha256=sha256(folder / "model.plan"))
    (folder / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "result.csv"
    rc = main(["infer", "padim", "-e", str(folder / "model.plan"), "-d", str(sample_root / "test" / CAT / "anomaly"),
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "model.plan: TensorRT is not installed here" in err and "--backend onnxruntime" in err
    assert not out.exists()
    # the folder itself still serves: its ONNX graph where TensorRT is absent
    rc = main(
        ["infer", "padim", "-e", str(folder), "-d", str(sample_root / "test" / CAT / "anomaly"), "--out", str(out)]
    )
    assert rc == 0 and out.is_file()
