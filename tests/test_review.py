"""The review queue: labelling field captures moves them into the seed layout, recorded in manifest.csv."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ad_core.capture import FieldCapture
from ad_core.cli import main
from ad_core.data.images import list_images, read_image
from ad_core.data.manifest import read_manifest
from ad_core.errors import DataError
from ad_core.inspector import Inspector
from ad_core.review import ReviewQueue

CAT = "Sample_brick"


@pytest.fixture
def captured(trained, sample_root, tmp_path):
    """A data root whose review queue holds four frames captured by FieldCapture (as the node does)."""
    data = tmp_path / "data"
    shutil.copytree(sample_root, data)
    run = trained("padim")
    inspector = Inspector.open(run, "torch")
    capture = FieldCapture(data, CAT, "all", max_per_min=0, model=str(run), model_version="v-test")
    paths = (
        list_images(sample_root / "test" / CAT / "anomaly")[:2] + list_images(sample_root / "test" / CAT / "normal")[:2]
    )
    for i, p in enumerate(paths):
        assert capture.offer(inspector(read_image(p)), 1_700_000_000 + i, 5, f"cam_{i}")
    capture.close()
    return data, run, paths


def test_capture_writes_image_and_sidecar_atomically(captured):
    data, run, paths = captured
    folder = data / "review" / CAT
    pngs = list_images(folder)
    assert [p.name for p in pngs] == [f"{1_700_000_000 + i}_000000005.png" for i in range(4)]
    side = json.loads(pngs[0].with_suffix(".json").read_text())
    assert side["model"] == str(run) and side["model_version"] == "v-test" and side["frame_id"] == "cam_0"
    assert side["captured_as"] in ("flagged", "all") and 0.0 <= side["score"] <= 1.0
    np.testing.assert_array_equal(read_image(pngs[0]), read_image(paths[0]))
    assert not list(folder.glob(".*"))


def test_label_moves_records_and_undoes(captured):
    data, _, _ = captured
    queue = ReviewQueue(data, CAT)
    items = queue.items()
    assert len(items) == 4 and items[0].score is not None and "model v-test" in items[0].caption()
    dest = queue.label(items[0], "anomaly", reviewer="tester")
    assert dest == data / "test" / CAT / "anomaly" / items[0].name and dest.is_file() and not items[0].path.exists()
    dest2 = queue.label(items[2].name, "normal", reviewer="tester", note="glare, not a defect")
    assert dest2.parent == data / "train" / CAT
    queue.label(items[3], "skip")
    assert (data / "review" / CAT / "skipped" / items[3].name).is_file()
    row = next(r for r in read_manifest(data / "test" / CAT / "anomaly") if r["file"] == dest.name)
    assert row["label"] == "anomaly" and row["reviewed_by"] == "tester" and row["model_version"] == "v-test"
    assert row["stamp"] == "1700000000.000000005" and row["frame_id"] == "cam_0" and float(row["score"]) >= 0
    normal_row = read_manifest(data / "train" / CAT)[-1]
    assert normal_row["note"] == "glare, not a defect" and normal_row["label"] == "normal"
    assert queue.counts() == {"waiting": 1, "normal": 1, "anomaly": 1, "skip": 1}
    # undo the skip and the normal: both frames and their sidecars are back, the manifest rows gone
    assert queue.undo() == items[3].path and queue.undo() == items[2].path
    assert items[2].path.is_file() and items[2].path.with_suffix(".json").is_file()
    assert not (data / "train" / CAT / "manifest.csv").exists() and len(queue) == 3
    with pytest.raises(DataError, match="label 'maybe'"):
        queue.label(queue.items()[0], "maybe")
    with pytest.raises(DataError, match="not in the review queue"):
        queue.label("nope.png", "normal")


def test_review_cli_in_the_terminal(captured, monkeypatch, capsys):
    data, _, _ = captured
    answers = iter(["a", "n", "u", "s", "q"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert main(["review", "--category", CAT, "--data_root", str(data)]) == 0
    out = capsys.readouterr().out
    assert "labelled: 0 normal, 1 anomaly, 1 skipped; 2 waiting" in out, out
    assert main(["review", "--category", CAT, "--data_root", str(data), "--list"]) == 0
    assert "2 frame(s) waiting" in capsys.readouterr().out
    name = ReviewQueue(data, CAT).items()[0].name
    assert main(["review", "--category", CAT, "--data_root", str(data), "--label", name, "normal"]) == 0
    assert (data / "train" / CAT / name).is_file()


def test_bag_frames_in_the_queue_keep_their_origin(tmp_path):
    from PIL import Image

    from ad_core.data.manifest import append_manifest

    folder = tmp_path / "review" / "Cell"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "1_000000001.png")
    append_manifest(folder, [{"file": "1_000000001.png", "bag": "/bags/run1", "topic": "/cam", "stamp": "1.000000001",
                              "frame_id": "cam", "index": 7}])  # fmt: skip
    queue = ReviewQueue(tmp_path, "Cell", normal_to="test")
    item = queue.items()[0]
    assert "from run1 /cam" in item.caption()
    dest = queue.label(item, "normal")
    assert dest.parent == tmp_path / "test" / "Cell" / "normal"
    row = read_manifest(dest.parent)[0]
    assert row["bag"] == "/bags/run1" and row["index"] == "7" and row["label"] == "normal"


def test_panel_state_retrains_with_new_normals_and_retests(evaluated, captured, tmp_path):
    from jupyter_ext.review import ReviewPanel

    data, run, _ = captured
    assert evaluated("padim")[0] == run  # the run the frames were captured with has been tested
    panel = ReviewPanel(data, CAT, model=str(run), models_root=tmp_path / "models")
    assert panel.state.waiting == 4 and panel.image.value  # the overlay of the first frame is drawn
    assert "score now" in panel.score.value
    first, second = panel.state.items[0].name, panel.state.items[1].name
    panel._on_key({"key": "A"})  # what ipyevents sends for a key press over the frame
    panel.buttons["normal"].click()
    assert (data / "test" / CAT / "anomaly" / first).is_file() and (data / "train" / CAT / second).is_file()
    assert panel.state.waiting == 2 and "2</b> waiting" in panel.counts.value
    panel._on_key({"key": "u"})
    assert panel.state.waiting == 3 and not (data / "train" / CAT / second).exists()
    panel.buttons["normal"].click()
    before = json.loads((run / "pytorch" / "meta.json").read_text())["test_metrics"]
    job = panel.start_retrain()
    job.join(600)
    assert job.state == "done", job.message
    new_run = job.result
    assert new_run != run and (new_run / "pytorch" / "meta.json").is_file()
    meta = json.loads((new_run / "pytorch" / "meta.json").read_text())
    assert meta["train_images"] + meta["val_images"] == len(list_images(data / "train" / CAT))
    table = panel.before_after.value
    assert "before" in table and "after" in table
    after = meta["test_metrics"]
    assert after["n_anomaly"] == before["n_anomaly"] + 1  # the frame labelled anomaly is now a test image
    assert (
        f"{before['n_normal']} / {before['n_anomaly']}" in table
        and f"{after['n_normal']} / {after['n_anomaly']}" in table
    )
    assert panel.state.model == str(new_run)
