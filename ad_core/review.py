"""The review queue: frames captured in the field (or imported from a bag) labelled by a person.

``<data_root>/review/<category>/`` holds PNGs, each with an optional JSON sidecar written by the
node's field capture (score, raw score, threshold, model version, stamp, frame_id). Labelling a
frame moves it into the category's seed layout and records it in that folder's ``manifest.csv``
with what the sidecar (or ``from-bag``'s manifest) knew about it:

* ``normal``  -> ``train/<category>/`` (a new normal for the next retrain; ``normal_to="test"``:
  ``test/<category>/normal/``)
* ``anomaly`` -> ``test/<category>/anomaly/`` (a real defect for the next test)
* ``skip``    -> ``review/<category>/skipped/`` (out of the queue, kept)

Every move can be undone (:meth:`ReviewQueue.undo`). The Review panel and ``ad-core review`` are
thin callers of this class.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ad_core.data.images import list_images
from ad_core.data.manifest import append_manifest, read_manifest, write_manifest
from ad_core.errors import DataError

LABELS = ("normal", "anomaly", "skip")
CARRIED = ("score", "raw_score", "is_anomaly", "model", "model_version", "frame_id", "captured_as")
FROM_BAG = ("bag", "topic", "stamp", "frame_id", "index")


@dataclass
class ReviewItem:
    """One frame waiting in the queue."""

    path: Path
    info: dict[str, Any]
    """the sidecar's fields (node capture), or the from-bag manifest row, or empty"""

    @property
    def name(self) -> str:
        """The file name."""
        return self.path.name

    @property
    def score(self) -> float | None:
        """The normalised score the node gave it, when known."""
        value = self.info.get("score")
        return float(value) if value not in (None, "") else None

    def caption(self) -> str:
        """One line for people: file, score and decision when known, where it came from."""
        parts = [self.name]
        if self.score is not None:
            flagged = str(self.info.get("is_anomaly")).lower() in ("true", "1")
            parts.append(f"score {self.score:.3f} ({'flagged' if flagged else 'passed'})")
        if self.info.get("model_version"):
            parts.append(f"model {self.info['model_version']}")
        if self.info.get("bag"):
            parts.append(f"from {Path(self.info['bag']).name} {self.info.get('topic', '')}")
        return " · ".join(parts)


class ReviewQueue:
    """The frames of ``data_root/review/<category>/`` and the moves that label them."""

    def __init__(self, data_root: str | Path, category: str, normal_to: str = "train") -> None:
        if normal_to not in ("train", "test"):
            raise DataError(f"normal_to {normal_to!r}: normal frames go to 'train' (retraining) or 'test'")
        if not category or "/" in category:
            raise DataError(f"category {category!r}: give the category folder name")
        self.data_root, self.category, self.normal_to = Path(data_root), category, normal_to
        self.folder = self.data_root / "review" / category
        self._done: list[tuple[Path, Path, Path | None, dict]] = []  # (from, to, sidecar from, row) for undo

    def destination(self, label: str) -> Path:
        """The folder a label moves a frame into."""
        if label == "anomaly":
            return self.data_root / "test" / self.category / "anomaly"
        if label == "normal":
            if self.normal_to == "train":
                return self.data_root / "train" / self.category
            return self.data_root / "test" / self.category / "normal"
        if label == "skip":
            return self.folder / "skipped"
        raise DataError(f"label {label!r}: choose one of {', '.join(LABELS)}")

    def items(self) -> list[ReviewItem]:
        """The frames waiting, oldest first (by name: capture and from-bag name them by stamp)."""
        if not self.folder.is_dir():
            return []
        imported = {r.get("file"): r for r in read_manifest(self.folder)}
        out = []
        for path in list_images(self.folder):
            side = path.with_suffix(".json")
            info: dict[str, Any] = {}
            if side.is_file():
                try:
                    info = json.loads(side.read_text())
                except (OSError, json.JSONDecodeError):
                    info = {}
            elif path.name in imported:
                info = {k: imported[path.name].get(k, "") for k in FROM_BAG}
            out.append(ReviewItem(path, info))
        return out

    def __len__(self) -> int:
        return len(self.items())

    def label(self, item: ReviewItem | str | Path, label: str, reviewer: str | None = None, note: str = "") -> Path:
        """Move one frame where ``label`` says and record it in that folder's manifest; returns the new path."""
        if isinstance(item, str | Path):
            path = self.folder / Path(item).name
            match = [i for i in self.items() if i.path == path]
            if not match:
                raise DataError(f"{path.name} is not in the review queue {self.folder}")
            item = match[0]
        if not item.path.is_file():
            raise DataError(f"{item.path} is no longer in the queue (labelled elsewhere?)")
        dest_dir = self.destination(label)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / item.name
        n = 1
        while dest.exists():
            dest, n = dest_dir / f"{item.path.stem}_{n}{item.path.suffix}", n + 1
        row = {
            "file": dest.name,
            "label": label,
            "from": "review",
            "reviewed_by": reviewer or getpass.getuser(),
            "reviewed_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            **{k: item.info.get(k, "") for k in (*CARRIED, *FROM_BAG) if k in item.info},
        }
        if note:
            row["note"] = note
        if isinstance(item.info.get("stamp"), dict):
            row["stamp"] = f"{item.info['stamp'].get('sec')}.{int(item.info['stamp'].get('nanosec', 0)):09d}"
        os.replace(item.path, dest)
        side = item.path.with_suffix(".json")
        kept_side = None
        if side.is_file():  # its content is in the manifest row now; kept beside a skipped frame only
            kept_side = dest.with_suffix(".json") if label == "skip" else self.folder / ".labelled" / side.name
            kept_side.parent.mkdir(parents=True, exist_ok=True)
            os.replace(side, kept_side)
        append_manifest(dest_dir, [row])
        self._done.append((item.path, dest, kept_side, row))
        return dest

    def undo(self) -> Path | None:
        """Put the last labelled frame back into the queue (and drop its manifest row); its queue path, or None."""
        if not self._done:
            return None
        source, dest, side, row = self._done.pop()
        os.replace(dest, source)
        if side is not None and side.is_file():
            os.replace(side, source.with_suffix(".json"))
        mine = {k: str(v) for k, v in row.items()}
        rows = [r for r in read_manifest(dest.parent) if {k: r.get(k) for k in mine} != mine]
        write_manifest(dest.parent, rows)
        return source

    def counts(self) -> dict[str, int]:
        """Frames waiting, and labelled in this session per label."""
        out = {"waiting": len(self.items()), **dict.fromkeys(LABELS, 0)}
        for _, _, _, row in self._done:
            out[row["label"]] += 1
        return out
