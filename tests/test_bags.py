"""`ad-core data from-bag`: ROS 2 bags (sqlite3 and mcap, written with rosbags) into the seed layout."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_core.cli import main
from ad_core.data.bags import import_bag, list_topics
from ad_core.data.images import read_image
from ad_core.errors import DataError

rosbags = pytest.importorskip("rosbags", reason="pip install rosbags (a dependency of ad-inspect)")
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
H, W = 24, 32
T0 = 1_700_000_000  # stamp seconds of the first frame


def _header(i: int, frame_id: str = "cam_optical"):
    Header = TS.types["std_msgs/msg/Header"]
    Time = TS.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=T0 + i // 10, nanosec=(i % 10) * 100_000_000), frame_id=frame_id)


def _image(rgb: np.ndarray, encoding: str, i: int):
    Image_ = TS.types["sensor_msgs/msg/Image"]
    if encoding == "bgr8":
        data = rgb[:, :, ::-1]
    elif encoding == "mono8":
        data = rgb[:, :, 0]
    else:
        data = rgb
    channels = 1 if data.ndim == 2 else 3
    return Image_(
        header=_header(i), height=H, width=W, encoding=encoding, is_bigendian=0, step=W * channels,
        data=np.ascontiguousarray(data, np.uint8).reshape(-1),
    )  # fmt: skip


def _compressed(rgb: np.ndarray, i: int):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    Compressed = TS.types["sensor_msgs/msg/CompressedImage"]
    return Compressed(header=_header(i), format="png", data=np.frombuffer(buf.getvalue(), np.uint8))


def _frames() -> list[tuple[np.ndarray, str]]:
    """12 frames: distinct random ones in three encodings, with frames 4-6 repeating frame 3 (robot standing still)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(12):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if 4 <= i <= 6:
            rgb = out[3][0].copy()
            rgb[0, 0, 0] ^= 1  # not bit-identical: the camera's noise
        enc = "rgb8" if 3 <= i <= 6 else ("rgb8", "bgr8", "mono8")[i % 3]
        if enc == "mono8":
            rgb = np.repeat(rgb[:, :, :1], 3, axis=2)  # what a mono camera's frame looks like in RGB
        out.append((rgb, enc))
    return out


def write_bag(path: Path, plugin) -> list[tuple[np.ndarray, str]]:
    frames = _frames()
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        cam = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        comp = writer.add_connection("/cam/compressed", "sensor_msgs/msg/CompressedImage", typestore=TS)
        chat = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=TS)
        String = TS.types["std_msgs/msg/String"]
        for i, (rgb, enc) in enumerate(frames):
            t = (T0 + i // 10) * 1_000_000_000 + (i % 10) * 100_000_000
            writer.write(cam, t, TS.serialize_cdr(_image(rgb, enc, i), "sensor_msgs/msg/Image"))
            writer.write(comp, t + 1, TS.serialize_cdr(_compressed(rgb, i), "sensor_msgs/msg/CompressedImage"))
            writer.write(chat, t + 2, TS.serialize_cdr(String(data=f"tick {i}"), "std_msgs/msg/String"))
    return frames


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def bag(request, tmp_path_factory):
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[request.param]
    path = tmp_path_factory.mktemp(request.param) / "recording"
    return path, write_bag(path, plugin), request.param


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("topic", ["/cam/image_raw", "/cam/compressed"])
def test_frames_come_out_pixel_for_pixel(bag, topic, tmp_path):
    path, frames, _ = bag
    report = import_bag(path, topic, "Cell3", tmp_path, progress=False)
    assert len(report.written) == len(frames) and not report.stopped
    folder = tmp_path / "train" / "Cell3"
    for (rgb, _), file in zip(frames, report.written, strict=True):
        np.testing.assert_array_equal(read_image(file), rgb)
    rows = _manifest(folder)
    assert [r["file"] for r in rows] == [p.name for p in report.written]
    assert rows[0]["stamp"] == f"{T0}.000000000" and rows[1]["stamp"] == f"{T0}.100000000"
    assert rows[11]["file"] == f"{T0 + 1}_100000000.png"
    assert {r["frame_id"] for r in rows} == {"cam_optical"} and rows[5]["index"] == "5"
    assert {r["topic"] for r in rows} == {topic} and rows[0]["bag"] == str(path)


def test_every_dedup_time_window_and_roi(bag, tmp_path):
    path, frames, _ = bag
    every = import_bag(path, "/cam/image_raw", "A", tmp_path, every=3, progress=False)
    assert [int(r["index"]) for r in every.rows] == [0, 3, 6, 9] and every.skipped_every == 8
    dedup = import_bag(path, "/cam/image_raw", "B", tmp_path, dedup=2.0, progress=False)
    assert dedup.duplicates == 3 and [int(r["index"]) for r in dedup.rows] == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    window = import_bag(path, "/cam/image_raw", "C", tmp_path, start=0.25, end=0.95, progress=False)
    assert [int(r["index"]) for r in window.rows] == [3, 4, 5, 6, 7, 8, 9]
    hz = import_bag(path, "/cam/image_raw", "D", tmp_path, hz=4.0, progress=False)  # frames every 0.1 s
    assert [int(r["index"]) for r in hz.rows] == [0, 3, 6, 9]
    roi = import_bag(path, "/cam/image_raw", "E", tmp_path, roi=[4, 2, 10, 8], split="review", progress=False)
    np.testing.assert_array_equal(read_image(roi.written[0]), frames[0][0][2:10, 4:14])
    assert roi.written[0].parent == tmp_path / "review" / "E"
    # a second import into the same folder appends to the manifest and never overwrites a frame
    again = import_bag(path, "/cam/image_raw", "A", tmp_path, every=3, progress=False)
    assert [p.name for p in again.written] == [f"{p.stem}_1.png" for p in every.written]
    assert len(_manifest(tmp_path / "train" / "A")) == 8


def test_list_and_clear_errors(bag, tmp_path, capsys):
    path, _, _ = bag
    topics = {t.topic: (t.msgtype, t.count) for t in list_topics(path)}
    assert topics == {
        "/cam/image_raw": ("sensor_msgs/msg/Image", 12),
        "/cam/compressed": ("sensor_msgs/msg/CompressedImage", 12),
        "/chatter": ("std_msgs/msg/String", 12),
    }
    assert main(["data", "from-bag", str(path), "--list"]) == 0
    assert "/cam/compressed" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"no topic '/camera'; its topics: /cam/compressed \(sensor_msgs/msg/Comp"):
        import_bag(path, "/camera", "X", tmp_path)
    with pytest.raises(DataError, match="topic /chatter carries std_msgs/msg/String; from-bag reads"):
        import_bag(path, "/chatter", "X", tmp_path)
    with pytest.raises(DataError, match="not a readable ROS 2 bag"):
        (tmp_path / "junk.mcap").write_bytes(b"not a bag at all")
        import_bag(tmp_path / "junk.mcap", "/cam/image_raw", "X", tmp_path)
    assert not (tmp_path / "train").exists() and not list(tmp_path.glob(".from-bag-*"))


@pytest.mark.parametrize("plugin", ["mcap", "sqlite3"])
def test_truncated_bag_imports_what_is_readable(plugin, tmp_path, capsys):
    """A recording cut short (power lost mid-write): VGA frames, so the file holds many MCAP chunks / pages."""
    path = tmp_path / "cut"
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(10)]
    storage = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[plugin]
    with Writer(path, version=9, storage_plugin=storage) as writer:
        cam = writer.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        for i, rgb in enumerate(frames):
            msg = _image(rgb, "rgb8", i)
            msg.height, msg.width, msg.step = 480, 640, 640 * 3
            writer.write(cam, (T0 * 10 + i) * 100_000_000, TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    (file,) = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 6 // 10])
    code = main(["data", "from-bag", str(file), "--topic", "/cam/image_raw", "--category", "Cut",
                 "--data_root", str(tmp_path / "data")])  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out + captured.err
    written = sorted((tmp_path / "data" / "train" / "Cut").glob("*.png"))
    if plugin == "sqlite3" and code == 2:  # SQLite may refuse the whole cut file: then nothing at all is written
        assert "not a readable ROS 2 bag" in out and not written, out
        return
    assert code == 1 and "the bag ends early" in out, out
    assert 0 < len(written) < len(frames)
    for i, f in enumerate(written):  # what was imported is whole and right
        np.testing.assert_array_equal(read_image(f), frames[i])
    assert len(_manifest(tmp_path / "data" / "train" / "Cut")) == len(written)
