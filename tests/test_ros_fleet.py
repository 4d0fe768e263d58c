"""Fleet roll-out on a real DDS graph: a node on models:/brick@prod follows the alias, and runs offline from its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from ros.harness import CAT, TOPIC, frames, listening, new_domain, publish, start_node  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ad_core import train  # noqa: E402
from ad_core.infer import infer  # noqa: E402
from ad_core.tracking import client, register  # noqa: E402


def expected_raw(bundle, plan, tmp_path) -> dict[str, float]:
    """Raw scores `ad-core infer` gives the plan's frames (mono8 frames as the node sees them)."""
    from PIL import Image

    from ad_core.data.images import read_image

    folder = tmp_path / f"frames_{os.getpid()}_{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for item in plan:
        rgb = read_image(item["file"])
        if item["encoding"] == "mono8":
            rgb = np.repeat(rgb.mean(axis=2).astype(np.uint8)[:, :, None], 3, axis=2)
        Image.fromarray(rgb).save(folder / f"{item['frame_id']}.png")
    report = infer("padim", bundle, folder, out=folder / "result.csv", progress=False)
    return {os.path.basename(r["file"])[:-4]: r["raw_score"] for r in report.rows}


def renamed(plan, prefix):
    return [{**p, "frame_id": f"{prefix}_{p['frame_id']}"} for p in plan]


def test_node_follows_the_alias_and_runs_offline_from_its_cache(evaluated, sample_root, tmp_path):
    store = str(tmp_path / "mlruns")
    v1 = evaluated("padim")[0]
    v2 = train("padim", CAT, sample_root, tmp_path / "pc", progress=False, image_size=128, n_features=64)
    register(v1, "brick", store)
    register(v2, "brick", store)
    client(store).set_registered_model_alias("brick", "prod", "1")
    models = tmp_path / "jetson_models"
    params = {"model_path": "models:/brick@prod", "models_root": models, "registry_uri": store, "capture": "off",
              "publish_overlay": False, "publish_map": False}  # fmt: skip
    new_domain()
    plan = frames(sample_root, 3)
    with listening(start_node(tmp_path / "node1.log", **params)) as listener:
        listener.wait(lambda: listener.diagnostics[-1].get("model_version") == "brick/1", what="version 1")
        first = renamed(plan, "v1")
        publish(first, tmp_path)
        listener.wait(lambda: all(p["frame_id"] in listener.results for p in first), what="v1 scores")
        want = expected_raw(v1 / "pytorch", first, tmp_path)
        for p in first:
            assert listener.results[p["frame_id"]].vector.y == pytest.approx(want[p["frame_id"]], rel=1e-4)

        # the fleet's operator moves the alias; the cell picks it up on ~/reload
        client(store).set_registered_model_alias("brick", "prod", "2")
        reply = listener.call("/ad_inspect/reload", Trigger, Trigger.Request())
        assert reply.success and "brick/2" in reply.message, reply.message
        listener.wait(lambda: listener.diagnostics[-1].get("model_version") == "brick/2", what="version 2")
        assert any(s.get("model_version") == "brick/2" for s in listener.status)
        second = renamed(plan, "v2")
        publish(second, tmp_path)
        listener.wait(lambda: all(p["frame_id"] in listener.results for p in second), what="v2 scores")
        want2 = expected_raw(v2 / "pytorch", second, tmp_path)
        for p in second:
            assert listener.results[p["frame_id"]].vector.y == pytest.approx(want2[p["frame_id"]], rel=1e-4)
        assert any(abs(want2[f"v2_{k}"] - want[f"v1_{k}"]) > 1e-3 for k in (p["frame_id"] for p in plan))
    assert (models / ".registry" / "brick" / "1" / "meta.json").is_file()

    # the registry goes away; a restarted cell runs the version it had, and says so
    shutil.move(store, tmp_path / "mlruns_gone")
    with listening(start_node(tmp_path / "node2.log", **params)) as listener:
        listener.wait(lambda: listener.diagnostics[-1].get("model_version") == "brick/2", what="cached version 2")
        third = renamed(plan, "off")
        publish(third, tmp_path)
        listener.wait(lambda: all(p["frame_id"] in listener.results for p in third), what="offline scores")
        want3 = expected_raw(models / ".registry" / "brick" / "2", third, tmp_path)
        for p in third:
            assert listener.results[p["frame_id"]].vector.y == pytest.approx(want3[p["frame_id"]], rel=1e-4)
    assert "registry unreachable" in (tmp_path / "node2.log").read_text()

    # without a cache it refuses to start, saying why
    fresh = {**params, "models_root": tmp_path / "empty_models"}
    args = [sys.executable, "-m", "ad_inspect.inspection_node", "--ros-args", "-p", f"image_topic:={TOPIC}"]
    for k, v in fresh.items():
        args += ["-p", f"{k}:={v}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot start" in proc.stderr and "no cached copy is known" in proc.stderr
    assert "Traceback" not in proc.stderr
