"""The ROS 2 inspection node on a real DDS graph: a node process, a camera process and this listener."""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from ros.harness import CAT, WAIT, frames, listening, new_domain, publish, start_node  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ad_core.data.images import read_image  # noqa: E402
from ad_core.runtime import open_scorer  # noqa: E402

PKG = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "ad_inspect"


@pytest.fixture(scope="module")
def graph(evaluated, sample_root, tmp_path_factory):
    """The node (own process, entry point) serving a trained and tested PaDiM; a listener in this process."""
    root = tmp_path_factory.mktemp("ros")
    models = root / "models"
    run = models / "PaDiM" / CAT / "run"
    shutil.copytree(evaluated("padim")[0], run)
    data = root / "data"
    shutil.copytree(sample_root, data)
    new_domain()
    node = start_node(
        root / "node.log",
        model_path=run,
        models_root=models,
        data_root=data,
        retrain_batch=4,
    )
    with listening(node) as listener:
        yield {"node": node, "listener": listener, "run": run, "data": data, "root": root, "log": root / "node.log"}


def test_scores_maps_and_overlays_carry_the_frame_headers(graph, tmp_path):
    listener, run = graph["listener"], graph["run"]
    plan = frames(graph["data"])
    publish(plan, tmp_path)
    ids = [item["frame_id"] for item in plan]
    listener.wait(lambda: all(i in listener.results and i in listener.overlays for i in ids), what="all frames scored")

    scorer = open_scorer(run, "onnxruntime")
    for item in plan:
        rgb = read_image(item["file"])
        if item["encoding"] == "mono8":
            rgb = np.repeat(rgb.mean(axis=2).astype(np.uint8)[:, :, None], 3, axis=2)
        expected = scorer([rgb])
        got = listener.results[item["frame_id"]]
        assert got.vector.y == pytest.approx(float(expected.raw_score[0]), rel=1e-4), item
        assert got.vector.x == pytest.approx(float(expected.score[0]), abs=1e-5)
        assert bool(got.vector.z) == bool(expected.is_anomaly[0])
        for topic in (listener.maps, listener.overlays):
            msg = topic[item["frame_id"]]
            assert msg.header.stamp == got.header.stamp and (msg.height, msg.width) == rgb.shape[:2]
        assert listener.maps[item["frame_id"]].encoding == "32FC1"
        assert listener.overlays[item["frame_id"]].encoding == "rgb8"
    anomalies = [listener.results[i].vector for i in ids if i.startswith("anomaly")]
    normals = [listener.results[i].vector for i in ids if i.startswith("normal")]
    assert sum(v.z for v in anomalies) >= 4  # defects score above the threshold
    assert np.mean([v.x for v in anomalies]) > np.mean([v.x for v in normals])

    # /diagnostics splits the node's latency into stages; paced frames never skip a map
    listener.wait(lambda: "inference_ms_median" in listener.diagnostics[-1], what="stage timings")
    words = ("model", "model_version", "capture", "capture_disk_free_mb")  # the values that are not counts or times
    diag = {k: float(v) for k, v in listener.diagnostics[-1].items() if k not in words}
    stages = ("stamp_to_callback", "take_newest", "convert", "inference", "publish_result", "map_overlay")
    assert all(diag[f"{s}_ms_median"] >= 0 for s in stages), diag
    assert 0 < diag["inference_ms_median"] <= diag["latency_ms_median"]
    assert diag["stamp_to_callback_ms_median"] < 1000  # same clock: the transport takes milliseconds
    assert diag["maps_skipped"] == 0 and diag["scored"] >= len(ids)
    # and the model call into the runtime's own stages (Scorer.timings)
    inner = {s: diag[f"inference_{s}_ms_median"] for s in ("preprocess", "graph", "maps")}
    assert all(v >= 0 for v in inner.values()) and 0 < inner["graph"] < diag["inference_ms_median"], diag


def _thread_niceness(pid: int) -> list[int]:
    out = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)": state is field 3
        out.append(int(fields[16]))  # field 19: nice
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread priorities from Linux's /proc")
def test_map_thread_runs_below_the_scoring_path(graph):
    """Maps and overlays are for people: their thread yields the cores to scoring and to the result's delivery."""
    from ad_inspect.inspection_node import RENDER_NICENESS

    niceness = _thread_niceness(graph["node"].pid)
    assert niceness.count(RENDER_NICENESS) == 1, niceness  # the map and overlay thread
    assert niceness.count(0) == len(niceness) - 1  # everything else: camera thread, executor, DDS, runtime


def test_a_burst_is_not_queued_the_newest_frame_is_scored_and_the_rest_counted(graph, tmp_path):
    """Frames sent faster than the model scores them: the node scores the newest, drops and counts the rest."""
    listener = graph["listener"]
    listener.wait(lambda: "dropped" in listener.diagnostics[-1], what="diagnostics")
    before = {k: int(listener.diagnostics[-1][k]) for k in ("received", "dropped", "scored")}
    good = frames(graph["data"], 3)
    burst = [{**good[i % 3], "frame_id": f"burst_{i}", "pause": 0} for i in range(12)]
    publish(burst, tmp_path)
    listener.wait(lambda: "burst_11" in listener.results, what="the burst's last (newest) frame")
    scored = [f["frame_id"] for f in burst if f["frame_id"] in listener.results]
    assert len(scored) < len(burst), "every frame of a burst was scored: frames were queued"
    time.sleep(1.5)  # the next diagnostics carry the counts
    after = {k: int(listener.diagnostics[-1][k]) for k in ("received", "dropped", "scored")}
    dropped = after["dropped"] - before["dropped"]
    assert dropped >= 1 and after["scored"] - before["scored"] == len(scored)
    # every frame taken was either scored or passed over; frames beyond the sensor-data queue's 5 may
    # have been discarded by DDS before the node could take them
    taken = after["received"] - before["received"]
    assert taken == len(scored) + dropped and taken <= len(burst)


def test_threshold_changes_live_and_bad_values_are_refused(graph, tmp_path):
    listener = graph["listener"]
    scorer = open_scorer(graph["run"], "onnxruntime")
    normals = [f for f in frames(graph["data"]) if f["frame_id"].startswith("normal") and f["encoding"] != "mono8"]
    normal = min(normals, key=lambda f: float(scorer([read_image(f["file"])]).score[0]))
    for threshold, expected in ((0.0, 1.0), (1.0, 0.0)):
        assert listener.set_param("threshold", threshold).successful
        item = {**normal, "frame_id": f"thr_{threshold}"}
        publish([item], tmp_path)
        listener.wait(lambda item=item: item["frame_id"] in listener.results, what="the frame after the change")
        assert listener.results[item["frame_id"]].vector.z == expected
    assert listener.set_param("threshold", -1.0).successful
    refused = listener.set_param("backend", "cuda-magic")
    assert not refused.successful and "backend must be one of" in refused.reason
    refused = listener.set_param("model_path", "/etc")
    assert not refused.successful and "outside the configured root" in refused.reason


def test_malformed_messages_are_counted_and_the_node_keeps_running(graph, tmp_path):
    listener = graph["listener"]
    good = frames(graph["data"], 1)[0]
    plan = [
        {**good, "frame_id": "bad_step", "defect": "step"},
        {**good, "frame_id": "bad_data", "defect": "truncated"},
        {**good, "frame_id": "bad_encoding", "defect": "encoding"},
        {**good, "frame_id": "after_bad"},
    ]
    before = int(listener.diagnostics[-1]["malformed"])
    publish(plan, tmp_path)
    listener.wait(lambda: "after_bad" in listener.results, what="the good frame after the malformed ones")
    assert graph["node"].poll() is None
    assert not {"bad_step", "bad_data", "bad_encoding"} & set(listener.results)
    listener.wait(lambda: int(listener.diagnostics[-1]["malformed"]) >= before + 3, what="malformed count")
    log = graph["log"].read_text()
    assert "step 7 is shorter than a row" in log and "unsupported encoding '32FC1'" in log and "data holds" in log


def test_services_save_reload_retrain_convert_and_busy_refusal(graph, tmp_path):
    listener, data = graph["listener"], graph["data"]
    publish([{**frames(data, 1)[0], "frame_id": "to_save"}], tmp_path)
    listener.wait(lambda: "to_save" in listener.results, what="a frame to save")
    saved = listener.call("/ad_inspect/save_frame", Trigger, Trigger.Request())
    assert saved.success, saved.message
    path = Path(saved.message)
    assert path.parent == (data / "train" / CAT).resolve()
    assert read_image(path).shape == read_image(frames(data, 1)[0]["file"]).shape

    reload = listener.call("/ad_inspect/reload", Trigger, Trigger.Request())
    assert reload.success and "padim" in reload.message

    listener.status.clear()
    first = listener.call("/ad_inspect/retrain", Trigger, Trigger.Request())
    second = listener.call("/ad_inspect/convert", Trigger, Trigger.Request())
    assert first.success and "retrain started" in first.message
    assert not second.success and second.message.startswith("busy: retrain running")
    listener.wait(lambda: any(s.get("state") in ("done", "failed") for s in listener.status), 600, "retrain outcome")
    outcome = next(s for s in listener.status if s.get("state") in ("done", "failed"))
    assert outcome["state"] == "done", outcome
    assert "retrained_" in outcome["model"]
    retrained = Path(outcome["model"])
    meta = json.loads((retrained / "meta.json").read_text())
    assert meta["retrain"]["new_images"] >= 1 and meta["retrain"].get("mode")

    # the node swapped models between frames and still listens on the same subscription
    publish([{**frames(data, 1)[0], "frame_id": "after_retrain"}], tmp_path)
    listener.wait(lambda: "after_retrain" in listener.results, what="a frame scored by the retrained model")
    listener.wait(lambda: "retrained_" in listener.diagnostics[-1]["model"], what="diagnostics naming the new model")

    listener.status.clear()
    assert listener.call("/ad_inspect/convert", Trigger, Trigger.Request()).success
    listener.wait(lambda: any(s.get("state") in ("done", "failed") for s in listener.status), 600, "convert outcome")
    outcome = next(s for s in listener.status if s.get("state") in ("done", "failed"))
    assert outcome["state"] == "done" and outcome["model"].endswith("model.onnx"), outcome
    publish([{**frames(data, 1)[0], "frame_id": "after_convert"}], tmp_path)
    listener.wait(lambda: "after_convert" in listener.results, what="a frame scored by the exported graph")


def test_launch_file_and_parameters_file_agree_with_the_node():
    tree = ast.parse((PKG / "launch" / "inspect.launch.py").read_text())
    consts = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name) and isinstance(node.value, ast.Constant | ast.Dict)
    }
    assert consts["PACKAGE"] == "ad_inspect" and consts["EXECUTABLE"] == "inspection_node"
    assert set(consts["OVERRIDABLE"]) == {"model_path", "image_topic", "backend"}
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    setup = (PKG / "setup.py").read_text()
    assert "inspection_node = {PACKAGE}.inspection_node:main" in setup and "config/*.yaml" in setup

    params = yaml.safe_load((PKG / "config" / "params.yaml").read_text())["ad_inspect"]["ros__parameters"]
    from ad_inspect.inspection_node import InspectionNode

    rclpy.init(context=(ctx := rclpy.Context()))
    try:
        node = InspectionNode(context=ctx)
        plain = rclpy.create_node("plain", context=ctx)  # rclpy's own parameters (use_sim_time, ...)
        declared = set(node._parameters) - set(plain._parameters)
        node.destroy_node()
        plain.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert set(params) == declared


def test_colcon_builds_the_ament_python_package(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed (pip install colcon-core colcon-ros ...; make setup does)")
    ws = tmp_path / "ws"
    shutil.copytree(PKG, ws / "src" / "ad_inspect", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    env = {**os.environ, "PATH": f"{colcon.parent}:{os.environ['PATH']}"}
    out = subprocess.run([str(colcon), "build"], cwd=ws, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    install = ws / "install" / "ad_inspect"
    assert (install / "lib" / "ad_inspect" / "inspection_node").is_file()  # what `ros2 run` starts
    share = install / "share" / "ad_inspect"
    assert (share / "launch" / "inspect.launch.py").is_file() and (share / "config" / "params.yaml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "ad_inspect").is_file()


@pytest.mark.parametrize(
    ("sig", "when"),
    [("SIGINT", "listening on"), ("SIGTERM", "listening on"), ("SIGINT", "no model_path set")],
    ids=["SIGINT-ready", "SIGTERM-ready", "SIGINT-while-starting"],
)
def test_the_node_stops_cleanly_on_a_signal(tmp_path, sig, when):
    """Ctrl-C, launch's shutdown and ``docker stop`` end the node with status 0 and no traceback.

    ``listening on`` is the node's last start-up line; ``no model_path set`` comes while it is still
    being built (a signal there once escaped ``main`` as a KeyboardInterrupt traceback).
    """
    import signal

    log_path = tmp_path / "node.log"
    env = {**os.environ, "ROS_DOMAIN_ID": str(random.randrange(100, 200))}
    with open(log_path, "w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "ad_inspect.inspection_node", "--ros-args", "-p", "image_topic:=/stop_test/image"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + WAIT
            while when not in log_path.read_text() and time.monotonic() < deadline:
                assert node.poll() is None, log_path.read_text()[-2000:]
                time.sleep(0.01)
            assert when in log_path.read_text(), "the node did not start"
            node.send_signal(getattr(signal, sig))
            rc = node.wait(30)
        finally:
            if node.poll() is None:
                node.kill()
    text = log_path.read_text()
    assert rc == 0, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
