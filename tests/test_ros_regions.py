"""Where the defect is, on a real DDS graph: /anomaly/mask, the region markers and the PLC's JSON, live pixel threshold."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from ros.harness import CAT, frames, listening, new_domain, publish, start_node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from ad_core.data.images import read_image  # noqa: E402
from ad_core.inspector import Inspector  # noqa: E402


def test_mask_markers_and_defects_follow_the_frame_and_the_pixel_threshold(evaluated, sample_root, tmp_path):
    run = tmp_path / "models" / "PaDiM" / CAT / "run"
    shutil.copytree(evaluated("padim")[0], run)
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    assert meta["pixel_threshold_source"] == "test_f1"  # the sample data has masks
    new_domain()
    node = start_node(tmp_path / "node.log", model_path=run, models_root=tmp_path / "models", capture="off",
                      publish_overlay=False, marker_focal_px=100.0)  # fmt: skip
    with listening(node) as listener:
        masks, markers, defects = {}, {}, {}
        n = listener.node
        n.create_subscription(Image, "/anomaly/mask", lambda m: masks.__setitem__(m.header.frame_id, m), 50)
        n.create_subscription(MarkerArray, "/anomaly/regions", lambda m: markers.__setitem__(
            m.markers[0].header.frame_id, m), 50)  # fmt: skip
        n.create_subscription(String, "/anomaly/defects", lambda m: defects.__setitem__(
            json.loads(m.data)["frame_id"], json.loads(m.data)), 50)  # fmt: skip
        plan = [p for p in frames(sample_root) if p["encoding"] != "mono8"]
        publish(plan, tmp_path)
        ids = [p["frame_id"] for p in plan]
        listener.wait(lambda: all(i in masks and i in markers and i in defects for i in ids), what="masks and regions")
        inspector = Inspector.open(run, "onnxruntime")
        for p in plan:
            result = listener.results[p["frame_id"]]
            mask = masks[p["frame_id"]]
            assert mask.header.stamp == result.header.stamp and mask.encoding == "mono8"
            got = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.width) > 0
            expected = inspector(read_image(p["file"]))
            np.testing.assert_array_equal(got, expected.mask())  # the node's mask is the Inspector's
            doc = defects[p["frame_id"]]
            assert doc["stamp"] == f"{result.header.stamp.sec}.{result.header.stamp.nanosec:09d}"
            assert [r["area"] for r in doc["regions"]] == [r.area for r in expected.regions()]
            arr = markers[p["frame_id"]].markers
            assert arr[0].action == Marker.DELETEALL and len(arr) == 1 + len(doc["regions"])
            assert all(m.header.stamp == result.header.stamp for m in arr)
            for m, r in zip(arr[1:], doc["regions"], strict=True):
                assert m.type == Marker.LINE_STRIP and len(m.points) == 5
                assert m.points[0].x == pytest.approx((r["x"] - mask.width / 2) / 100.0)  # z = 1 m, f = 100 px
        flagged = [defects[i] for i in ids if i.startswith("anomaly")]
        area_before = sum(d["defect_area"] for d in flagged)  # the pixel F1 threshold keeps only the strongest

        # a lower pixel threshold, live: larger masks on the next frames
        assert listener.set_param("pixel_threshold", 0.3).successful
        again = [{**p, "frame_id": "low_" + p["frame_id"]} for p in plan if p["frame_id"].startswith("anomaly")]
        publish(again, tmp_path)
        listener.wait(lambda: all(p["frame_id"] in defects for p in again), what="frames at the new threshold")
        assert all(defects[p["frame_id"]]["pixel_threshold"] == 0.3 for p in again)
        assert sum(defects[p["frame_id"]]["defect_area"] for p in again) > area_before
        assert sum(defects[p["frame_id"]]["defect_area"] > 0 for p in again) >= 3  # most defects now show
        assert not listener.set_param("pixel_threshold", 1.5).successful  # outside its range


def test_a_tiled_engine_folder_reports_defects_in_frame_pixels(mosaics, tmp_path):
    """A model trained on 2x2 tiles, deployed as an engine folder: the node cuts each frame as training did."""
    from ad_core import evaluate, load_bundle, train
    from ad_core.convert import convtrt

    run = train("padim", "Mosaic", mosaics, tmp_path / "runs", image_size=64, tiles="2x2", progress=False)
    evaluate(run, mosaics, save_images=False, progress=False)  # the image and pixel thresholds
    engine = tmp_path / "models" / "PaDiM" / "Mosaic" / "engine"
    convtrt("padim", None, load_bundle(run).path / "meta.json", engine)
    new_domain()
    node = start_node(tmp_path / "node.log", model_path=engine, models_root=tmp_path / "models", capture="off",
                      publish_overlay=False, pixel_threshold=0.3)  # fmt: skip
    test = mosaics / "test" / "Mosaic"
    plan = [{"file": str(p), "frame_id": p.stem, "encoding": "rgb8"} for p in sorted((test / "anomaly").glob("*"))[:8]]
    plan += [{"file": str(p), "frame_id": p.stem, "encoding": "bgr8"} for p in sorted((test / "normal").glob("*"))[:4]]
    with listening(node) as listener:
        defects = {}
        listener.node.create_subscription(String, "/anomaly/defects", lambda m: defects.__setitem__(
            json.loads(m.data)["frame_id"], json.loads(m.data)), 50)  # fmt: skip
        publish(plan, tmp_path)
        listener.wait(lambda: all(p["frame_id"] in defects for p in plan), what="the tiled model's defects")
    inspector = Inspector.open(engine, "onnxruntime", pixel_threshold=0.3)
    quarters = []
    for p in plan:
        doc, expected = defects[p["frame_id"]], inspector(read_image(p["file"]))
        assert doc["raw_score"] == pytest.approx(expected.raw_score, rel=1e-4, abs=1e-4)
        assert [r["area"] for r in doc["regions"]] == [r.area for r in expected.regions()]
        if "_q" in p["frame_id"] and doc["regions"]:
            strongest = max(doc["regions"], key=lambda r: r["peak"])
            x, y = strongest["centroid"]  # frame pixels of the 256-px mosaic, whose quarters are the tiles
            quarters.append((2 * (y >= 128) + (x >= 128), int(p["frame_id"].split("_q")[1])))
    assert len(quarters) >= 3, defects  # measured: 3 of the 8 defective frames reach 0.3 somewhere
    assert all(found == true for found, true in quarters), quarters  # each in the quarter that holds the defect
