"""Field capture on a real DDS graph: the node saves exactly the frames it flags, with sidecars; the disk guard."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from ros.harness import CAT, frames, listening, new_domain, publish, start_node  # noqa: E402

from ad_core.data.images import read_image  # noqa: E402


@pytest.fixture(scope="module")
def graph(evaluated, sample_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    run = root / "models" / "PaDiM" / CAT / "run"
    shutil.copytree(evaluated("padim")[0], run)
    data = root / "data"
    new_domain()
    node = start_node(
        root / "node.log",
        model_path=run,
        models_root=root / "models",
        data_root=data,
        capture="flagged",
        capture_max_per_min=0.0,
        publish_overlay=False,
    )
    with listening(node) as listener:
        yield {"listener": listener, "data": data, "sample": sample_root, "log": root / "node.log"}


def _saved(folder) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_flagged_frames_are_saved_with_sidecars(graph, tmp_path):
    listener, review = graph["listener"], graph["data"] / "review" / CAT
    plan = frames(graph["sample"])
    publish(plan, tmp_path)
    ids = [p["frame_id"] for p in plan]
    listener.wait(lambda: all(i in listener.results for i in ids), what="all frames scored")
    flagged = {i: listener.results[i] for i in ids if listener.results[i].vector.z > 0.5}
    assert flagged and len(flagged) < len(ids), "the sequence needs both decisions"
    listener.wait(lambda: len(_saved(review)) >= len(flagged), timeout=30, what="the capture thread's files")
    saved = _saved(review)
    by_frame = {s["frame_id"]: s for s in saved.values()}
    assert set(by_frame) == set(flagged), "capture:=flagged saves exactly the flagged frames"
    for frame_id, msg in flagged.items():
        side = by_frame[frame_id]
        stem = f"{msg.header.stamp.sec}_{msg.header.stamp.nanosec:09d}"
        assert side["file"] == f"{stem}.png" and (review / f"{stem}.png").is_file()
        assert side["stamp"] == {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec}
        assert side["raw_score"] == pytest.approx(msg.vector.y, rel=1e-5)
        assert side["score"] == pytest.approx(msg.vector.x, abs=1e-6) and side["is_anomaly"] is True
        assert side["threshold"]["scale"] == "normalized" and side["model_version"]
        assert side["captured_as"] == "flagged" and side["model"].endswith("run")
        source = next(p for p in plan if p["frame_id"] == frame_id)
        expected = read_image(source["file"])
        if source["encoding"] == "mono8":
            expected = np.repeat(expected.mean(axis=2).astype(np.uint8)[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(read_image(review / f"{stem}.png"), expected)  # the frame the model saw
    assert not list(review.glob(".*.part")), "no half-written file is left"
    diag = listener.diagnostics[-1]
    assert diag["capture"] == "flagged (on)" and int(diag["capture_saved"]) >= len(flagged)


def test_disk_guard_pauses_capture_and_says_so(graph, tmp_path):
    listener, review = graph["listener"], graph["data"] / "review" / CAT
    before = len(_saved(review))
    assert listener.set_param("capture_min_free_mb", 1e9).successful  # more than any disk has
    plan = [p for p in frames(graph["sample"]) if p["frame_id"].startswith("anomaly")]
    for p in plan:
        p["frame_id"] = "late_" + p["frame_id"]
    publish(plan, tmp_path)
    listener.wait(lambda: all(p["frame_id"] in listener.results for p in plan), what="the late frames")
    listener.wait(lambda: "paused: disk nearly full" in listener.diagnostics[-1].get("capture", ""), what="pause")
    assert len(_saved(review)) == before
    assert int(listener.diagnostics[-1]["capture_skipped_disk"]) >= 1
    assert listener.set_param("capture", "off").successful
    listener.wait(lambda: listener.diagnostics[-1].get("capture") == "off (off)", what="capture off")
