"""Robot recordings into datasets: ``ad-core data from-bag``.

Reads ROS 2 bags (sqlite3 ``.db3`` and ``.mcap``; a bag folder with ``metadata.yaml`` or a single
file) with ``rosbags``, pure Python, so no ROS installation is needed. Camera topics of type
``sensor_msgs/msg/Image`` (every encoding the inspection node accepts) and
``sensor_msgs/msg/CompressedImage`` are decoded by :mod:`ad_core.data.ros_images`, the node's own
conversions, and written as PNGs into the seed layout::

    train        -> <data_root>/train/<CATEGORY>/
    test/normal  -> <data_root>/test/<CATEGORY>/normal/
    test/anomaly -> <data_root>/test/<CATEGORY>/anomaly/
    review       -> <data_root>/review/<CATEGORY>/         (the Review panel's queue)

Files are named by the frame's header stamp (``<sec>_<nanosec>.png``; the bag's receive time when the
stamp is zero) and listed in that folder's ``manifest.csv`` (file, bag, topic, stamp, frame_id, source
index). Frames are written to a hidden staging folder first and moved in at the end, so an import that
fails leaves no partial files; a bag cut short (a robot losing power mid-recording) is imported up to
the last readable message and the report says where it stopped.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ad_core.data.manifest import append_manifest
from ad_core.data.ros_images import MalformedImage, compressed_to_rgb, image_to_rgb, parse_compressed, parse_image
from ad_core.errors import DataError

IMAGE_TYPES = {
    "sensor_msgs/msg/Image": (parse_image, image_to_rgb),
    "sensor_msgs/msg/CompressedImage": (parse_compressed, compressed_to_rgb),
}
SPLITS = {
    "train": ("train", "{category}"),
    "test/normal": ("test", "{category}", "normal"),
    "test/anomaly": ("test", "{category}", "anomaly"),
    "review": ("review", "{category}"),
}
MANIFEST_FIELDS = ("file", "bag", "topic", "stamp", "frame_id", "index")


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    topic: str
    msgtype: str
    count: int


@dataclass
class BagImport:
    """What ``from-bag`` did."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    seen: int = 0
    skipped_time: int = 0
    skipped_every: int = 0
    duplicates: int = 0
    malformed: list[str] = field(default_factory=list)
    stopped: str = ""
    """where and why reading stopped early (a truncated bag), empty when the bag was read to the end"""
    rows: list[dict] = field(default_factory=list)
    """the manifest rows of the written frames"""

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{len(self.written)} frames written to {self.folder} (of {self.seen} on the topic)"]
        dropped = {
            "outside --start/--end": self.skipped_time,
            "thinned by --every/--hz": self.skipped_every,
            "near-duplicates (--dedup)": self.duplicates,
            "undecodable": len(self.malformed),
        }
        lines += [f"  {n} {what}" for what, n in dropped.items() if n]
        lines += [f"  skipped: {m}" for m in self.malformed[:5]]
        if self.stopped:
            lines.append(f"warning: {self.stopped}")
        return "\n".join(lines)


class _Bag:
    """A bag opened by rosbags' ``AnyReader``: its topics, start time and one topic's raw messages."""

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        self.reader = AnyReader([path])
        self.reader.open()
        counts: dict[tuple[str, str], int] = {}
        for c in self.reader.connections:
            counts[(c.topic, c.msgtype)] = counts.get((c.topic, c.msgtype), 0) + int(c.msgcount)
        self.topics = [TopicInfo(t, m, n) for (t, m), n in sorted(counts.items())]
        self.start_time = self.reader.start_time
        self.note = ""

    def messages(self, topic: str):
        """``(timestamp ns, serialized bytes)`` of ``topic`` in time order."""
        connections = [c for c in self.reader.connections if c.topic == topic]
        for _, timestamp, raw in self.reader.messages(connections=connections):
            yield timestamp, raw

    def close(self) -> None:
        self.reader.close()


class _McapStream:
    """An MCAP file read record by record (the ``mcap`` package).

    A file cut short has no index or footer for rosbags to open, but every chunk before the cut is
    still whole and readable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        counts: dict[tuple[str, str], int] = {}
        self.start_time = None
        self.note = ""
        try:
            for topic, msgtype, timestamp, _ in self._records():
                counts[(topic, msgtype)] = counts.get((topic, msgtype), 0) + 1
                self.start_time = timestamp if self.start_time is None else min(self.start_time, timestamp)
        except Exception as exc:
            self.note = f"{path} is cut short ({type(exc).__name__}); counts are of the readable part"
        if not counts:
            raise DataError(f"{path}: no readable messages in this MCAP file")
        self.topics = [TopicInfo(t, m, n) for (t, m), n in sorted(counts.items())]

    def _records(self):
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        with open(self.path, "rb") as fh:
            for rec in StreamReader(fh).records:
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec.name
                elif isinstance(rec, Channel):
                    channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                elif isinstance(rec, Message) and rec.channel_id in channels:
                    topic, msgtype = channels[rec.channel_id]
                    yield topic, msgtype, rec.log_time, rec.data

    def messages(self, topic: str):
        """``(timestamp ns, serialized bytes)`` of ``topic`` in file order; raises where the file is cut."""
        for t, _, timestamp, raw in self._records():
            if t == topic:
                yield timestamp, raw

    def close(self) -> None:
        pass


def _open(bag: str | Path):
    path = Path(bag)
    if not path.exists():
        raise DataError(f"{path}: no such bag (a rosbag2 folder, or a .mcap / .db3 file)")
    try:
        return _Bag(path)
    except Exception as exc:  # rosbags raises its own error types, sqlite3's and OSError for what is not a bag
        mcaps = [path] if path.suffix == ".mcap" else sorted(path.glob("*.mcap")) if path.is_dir() else []
        if len(mcaps) == 1:
            try:
                return _McapStream(mcaps[0])
            except Exception:
                pass
        raise DataError(f"{path}: not a readable ROS 2 bag ({type(exc).__name__}: {exc})") from exc


def list_topics(bag: str | Path) -> list[TopicInfo]:
    """Topics, types and message counts of a bag (``from-bag --list``)."""
    reader = _open(bag)
    try:
        return reader.topics
    finally:
        reader.close()


def _topics_text(topics: Sequence[TopicInfo]) -> str:
    return "; ".join(f"{t.topic} ({t.msgtype}, {t.count})" for t in topics) or "none"


def _signature(rgb: np.ndarray) -> np.ndarray:
    """A small grey thumbnail for comparing consecutive frames (64 x 64, float32)."""
    from PIL import Image

    grey = Image.fromarray(rgb).convert("L").resize((64, 64), Image.BILINEAR)
    return np.asarray(grey, np.float32)


def import_bag(
    bag: str | Path,
    topic: str,
    category: str,
    data_root: str | Path = "data",
    *,
    split: str = "train",
    every: int | None = None,
    hz: float | None = None,
    start: float | None = None,
    end: float | None = None,
    dedup: float | None = None,
    roi: Sequence[int] | None = None,
    progress: bool = True,
) -> BagImport:
    """Write the frames of ``topic`` as PNGs into ``split`` of ``category``; see the module docstring.

    Args:
        bag: a rosbag2 folder, or a ``.mcap`` / ``.db3`` file.
        topic: the camera topic (``sensor_msgs/msg/Image`` or ``CompressedImage``).
        category: the category folder the frames go into.
        data_root: the data root of the seed layout.
        split: ``train``, ``test/normal``, ``test/anomaly`` or ``review``.
        every: keep every Nth message of the topic.
        hz: keep at most this many frames per second (by stamp).
        start: seconds from the bag's first message; earlier frames are skipped.
        end: seconds from the bag's first message; later frames are skipped.
        dedup: drop a frame whose mean absolute difference to the last kept one (grey, 64x64, 0-255)
            is below this, e.g. 2.0 while the robot stands still.
        roi: ``[x, y, width, height]`` cropped out of every frame (as the node's ``roi``).
        progress: show a progress bar.
    """
    from ad_core.inspector import check_roi, crop_roi

    if split not in SPLITS:
        raise DataError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    if every is not None and hz is not None:
        raise DataError("give --every or --hz, not both")
    if every is not None and every < 1:
        raise DataError(f"--every {every}: keep every Nth frame, N >= 1")
    if hz is not None and not hz > 0:
        raise DataError(f"--hz {hz}: give a rate above 0")
    if dedup is not None and dedup < 0:
        raise DataError(f"--dedup {dedup}: a difference in grey levels, >= 0")
    if not category or "/" in category:
        raise DataError(f"--category {category!r}: give a folder name, e.g. Robot_cell3")
    box = check_roi(roi)
    reader = _open(bag)
    try:
        topics = reader.topics
        mine = [t for t in topics if t.topic == topic]
        if not mine:
            raise DataError(f"{bag} has no topic {topic!r}; its topics: {_topics_text(topics)}")
        msgtype = mine[0].msgtype
        if msgtype not in IMAGE_TYPES:
            raise DataError(
                f"topic {topic} carries {msgtype}; from-bag reads {' and '.join(IMAGE_TYPES)} (other topics: "
                f"{_topics_text([t for t in topics if t.msgtype in IMAGE_TYPES]) or 'no image topics'})"
            )
        root = Path(data_root)
        folder = root.joinpath(*(part.format(category=category) for part in SPLITS[split]))
        root.mkdir(parents=True, exist_ok=True)
        total = sum(t.count for t in mine)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".from-bag-{category}-") as tmp:
            report = _read(
                reader, msgtype, Path(bag), topic, Path(tmp), folder, total,
                every, hz, start, end, dedup, box, crop_roi, progress,
            )  # fmt: skip
            _move_in(Path(tmp), folder, report)
        return report
    finally:
        reader.close()


def _read(reader, msgtype, bag, topic, tmp, folder, total, every, hz, start, end, dedup, box, crop, bar):
    parse, to_rgb = IMAGE_TYPES[msgtype]
    report = BagImport(folder)
    rows = []
    first = reader.start_time  # ns
    last_kept_t: float | None = None
    last_sig: np.ndarray | None = None
    index = -1
    messages = reader.messages(topic)
    with tqdm(total=total, desc=f"from-bag {topic}", disable=not bar, leave=False, unit="frame") as progress:
        while True:
            try:
                timestamp, raw = next(messages)
            except StopIteration:
                break
            except Exception as exc:  # a truncated or damaged bag: keep what was read, say where it stopped
                report.stopped = (
                    f"the bag ends early: reading stopped after message {index + 1} of {total} on {topic} "
                    f"({type(exc).__name__}: {exc}); the frames before it were imported"
                )
                break
            index += 1
            report.seen += 1
            progress.update(1)
            offset = (timestamp - first) / 1e9
            if (start is not None and offset < start) or (end is not None and offset > end):
                report.skipped_time += 1
                continue
            if every is not None and index % every:
                report.skipped_every += 1
                continue
            try:
                msg = parse(raw)
                stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec or timestamp
                if hz is not None and last_kept_t is not None and (stamp_ns / 1e9 - last_kept_t) < 1.0 / hz - 1e-9:
                    report.skipped_every += 1
                    continue
                rgb = crop(to_rgb(msg), box)
            except (MalformedImage, DataError) as exc:
                report.malformed.append(f"message {index}: {exc}")
                continue
            if dedup is not None:
                sig = _signature(rgb)
                if last_sig is not None and float(np.abs(sig - last_sig).mean()) < dedup:
                    report.duplicates += 1
                    continue
                last_sig = sig
            last_kept_t = stamp_ns / 1e9
            name = _unique(tmp, folder, f"{stamp_ns // 1_000_000_000}_{stamp_ns % 1_000_000_000:09d}")
            _save(rgb, tmp / name)
            report.written.append(folder / name)
            rows.append(
                {
                    "file": name,
                    "bag": str(bag),
                    "topic": topic,
                    "stamp": f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}",
                    "frame_id": msg.header.frame_id,
                    "index": index,
                }
            )
    report.rows = rows
    return report


def _unique(tmp: Path, folder: Path, stem: str) -> str:
    name, n = f"{stem}.png", 1
    while (tmp / name).exists() or (folder / name).exists():
        name, n = f"{stem}_{n}.png", n + 1
    return name


def _save(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def _move_in(tmp: Path, folder: Path, report: BagImport) -> None:
    """Move the written frames into ``folder``, then add their rows to its ``manifest.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in report.written:
        os.replace(tmp / path.name, path)
    append_manifest(folder, report.rows, MANIFEST_FIELDS)
