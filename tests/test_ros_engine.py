"""The node as the README deploys it: started on the engine folder ``convtrt`` wrote, on a real DDS graph.

For PatchCore and PaDiM: ``~/retrain``, then ``~/convert``, then ``~/retrain`` again. After each
call ``~/status`` says ``done``, frames keep being scored, and the node's scores equal what
``ad-core infer`` gives on the newly written model. Frames paced like parts on a conveyor (2 Hz)
each get their map and overlay with their header.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from ros.harness import CAT, frames, listening, new_domain, publish, start_node  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ad_core.cli import main as ad_core  # noqa: E402
from ad_core.data.images import read_image  # noqa: E402

JOB_WAIT = 600


@pytest.fixture(scope="module", params=["patchcore", "padim"])
def deployed(request, trained, sample_root, tmp_path_factory):
    """A run converted with ``ad-core convtrt`` and the node started on its ``engine/model.onnx``."""
    model = request.param
    root = tmp_path_factory.mktemp(f"deploy_{model}")
    models, data = root / "models", root / "data"
    run = models / trained(model).parent.parent.name / CAT / "run"
    shutil.copytree(trained(model), run)
    shutil.copytree(sample_root, data)
    assert ad_core(["convtrt", "--model", model, "--meta_json", str(run / "pytorch" / "meta.json"),
                    "--out_dir", str(run / "engine")]) == 0  # fmt: skip
    engine = run / "engine"
    assert {"model.onnx", "model.pth", "meta.json"} <= {p.name for p in engine.iterdir()}
    new_domain()
    node = start_node(
        root / "node.log", model_path=engine / "model.onnx", models_root=models, data_root=data, retrain_batch=4
    )
    with listening(node) as listener:
        yield {"model": model, "node": node, "listener": listener, "run": run, "data": data, "root": root}


def infer_scores(model: str, engine: Path, files: list[str], out: Path) -> dict[str, float]:
    """Raw scores of ``ad-core infer`` on ``engine``, by file name."""
    folder = out.with_suffix("")
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / Path(f).name)
    assert ad_core(["infer", model, "-e", str(engine), "-d", str(folder), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        return {Path(r["file"]).name: float(r["raw_score"]) for r in csv.DictReader(fh)}


def score_and_compare(g: dict, engine: Path, tag: str, tmp_path: Path) -> None:
    """Send rgb8 frames, then check the node's raw scores against ``ad-core infer`` on ``engine``."""
    plan = [{**f, "frame_id": f"{tag}_{f['frame_id']}", "encoding": "rgb8"} for f in frames(g["data"], 2)]
    listener = g["listener"]
    publish(plan, tmp_path)
    listener.wait(lambda: all(p["frame_id"] in listener.results for p in plan), what=f"frames after {tag}")
    expected = infer_scores(g["model"], engine, [p["file"] for p in plan], tmp_path / f"infer_{tag}.csv")
    for p in plan:
        got = listener.results[p["frame_id"]].vector.y
        assert got == pytest.approx(expected[Path(p["file"]).name], rel=1e-4), (tag, p)


def call_job(g: dict, service: str) -> dict:
    listener = g["listener"]
    listener.status.clear()
    answer = listener.call(f"/ad_inspect/{service}", Trigger, Trigger.Request())
    assert answer.success, answer.message
    listener.wait(lambda: any(s.get("state") not in (None, "running") for s in listener.status), JOB_WAIT, service)
    outcome = next(s for s in listener.status if s.get("state") not in (None, "running"))
    log = (g["root"] / "node.log").read_text()[-3000:]
    assert outcome["state"] == "done", (outcome, log)
    return outcome


def test_retrain_convert_retrain_from_the_engine_folder(deployed, tmp_path):
    g = deployed
    score_and_compare(g, g["run"] / "engine" / "model.onnx", "engine", tmp_path)

    first = call_job(g, "retrain")
    retrained = Path(first["model"])
    assert retrained.name.startswith("retrained_") and (retrained / "model.pth").is_file()
    meta = json.loads((retrained / "meta.json").read_text())
    assert meta["retrain"]["mode"] in ("extend", "merge") and "engine" not in meta
    score_and_compare(g, retrained, "retrain1", tmp_path)

    converted = Path(call_job(g, "convert")["model"])
    assert converted.name == "model.onnx" and converted.parent.name.startswith("engine_")
    assert {"model.pth", "meta.json"} <= {p.name for p in converted.parent.iterdir()}
    score_and_compare(g, converted, "convert", tmp_path)
    if g["model"] == "patchcore":  # the search graph for a GPU is written; ONNX Runtime searches on the CPU
        assert (converted.parent / "search.onnx").is_file()
        assert f"({g['model']}, onnxruntime, bank search cells, " in (g["root"] / "node.log").read_text()

    second = Path(call_job(g, "retrain")["model"])
    assert second != retrained and second.name.startswith("retrained_")
    assert json.loads((second / "meta.json").read_text())["retrain"]["from_meta_json"].startswith(
        str(converted.parent.resolve())
    )
    score_and_compare(g, second, "retrain2", tmp_path)
    g["listener"].wait(lambda: second.name in g["listener"].diagnostics[-1]["model"], what="diagnostics naming it")


def test_parts_arriving_one_at_a_time_each_get_map_and_overlay(deployed, tmp_path):
    listener = deployed["listener"]
    plan = [
        {**f, "frame_id": f"paced_{i}", "encoding": "rgb8", "pause": 0.5}
        for i, f in enumerate(frames(deployed["data"], 3))
    ]
    publish(plan, tmp_path)
    ids = [p["frame_id"] for p in plan]
    listener.wait(lambda: all(i in listener.overlays and i in listener.maps for i in ids), what="every map and overlay")
    for p in plan:
        result = listener.results[p["frame_id"]]
        h, w = read_image(p["file"]).shape[:2]
        for topic in (listener.maps, listener.overlays):
            msg = topic[p["frame_id"]]
            assert msg.header.stamp == result.header.stamp and msg.header.frame_id == p["frame_id"]
            assert (msg.height, msg.width) == (h, w)
