"""Field capture: inspected frames saved for review, off the scoring thread.

A robot cell scores every frame and then the frame is gone. :class:`FieldCapture` keeps the ones
worth a second look: every frame the model flags (``mode="flagged"``; plus a random share of
normal ones, ``normal_rate``, so false rejects *and* misses can be found), or every frame
(``mode="all"``). Each goes to ``<data_root>/review/<category>/<sec>_<nanosec>.png`` (the image the
model saw: the frame, or its ROI) with a JSON sidecar of the same name: score, raw score, threshold,
decision, model and model version, stamp and frame_id. The Review panel and ``ad-core review``
read that queue.

The scoring thread only decides and hands over (:meth:`offer`, microseconds); a writer thread of
its own encodes and writes, each file to a temporary name first. A burst is capped by
``max_per_min``; when the disk holding ``data_root`` has less than ``min_free_mb`` free, writing
pauses and :meth:`stats` says so (the node puts it on ``/diagnostics``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import ConfigError
from ad_core.fileio import PNG_COMPRESS_LEVEL

MODES = ("off", "flagged", "all")


@dataclass
class CaptureStats:
    """What capture has done since start."""

    saved: int = 0
    skipped_rate: int = 0
    skipped_disk: int = 0
    skipped_queue: int = 0
    errors: int = 0
    last_error: str = ""
    disk_free_mb: float = float("nan")
    paused: bool = False
    recent: deque = field(default_factory=lambda: deque(maxlen=1000))


def writable(folder: str | Path) -> bool:
    """Whether files can be created in ``folder`` (created if missing)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


class FieldCapture:
    """Decide on the scoring thread, write on a thread of its own; see the module docstring."""

    def __init__(
        self,
        data_root: str | Path,
        category: str,
        mode: str = "flagged",
        *,
        max_per_min: float = 30.0,
        normal_rate: float = 0.0,
        min_free_mb: float = 500.0,
        model: str = "",
        model_version: str = "",
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"capture {mode!r}: choose one of {', '.join(MODES)}")
        if not 0.0 <= normal_rate <= 1.0:
            raise ConfigError(f"capture_normal_rate {normal_rate}: a fraction of normal frames, 0 to 1")
        if max_per_min < 0 or min_free_mb < 0:
            raise ConfigError("capture_max_per_min and capture_min_free_mb must be >= 0")
        self.folder = Path(data_root) / "review" / category
        self.mode, self.max_per_min, self.normal_rate, self.min_free_mb = mode, max_per_min, normal_rate, min_free_mb
        self.model, self.model_version = model, model_version
        self.stats = CaptureStats()
        self._rng = np.random.default_rng(seed)
        self._times: deque[float] = deque()
        self._queue: queue.Queue = queue.Queue(maxsize=32)
        self._thread: threading.Thread | None = None
        if mode != "off":
            self._thread = threading.Thread(target=self._writer, name="ad_inspect_capture", daemon=True)
            self._thread.start()

    # -- the scoring thread --------------------------------------------------------------------------
    def wanted(self, is_anomaly: bool) -> bool:
        """Whether a frame with this decision is one to keep (before the rate cap)."""
        if self.mode == "all":
            return True
        if self.mode == "flagged":
            return bool(is_anomaly) or (self.normal_rate > 0 and self._rng.random() < self.normal_rate)
        return False

    def offer(self, result, sec: int, nanosec: int, frame_id: str = "") -> bool:
        """Hand a scored frame over if it is to be kept; True when it was queued. Never blocks."""
        if not self.wanted(result.is_anomaly):
            return False
        now = time.monotonic()
        while self._times and now - self._times[0] > 60.0:
            self._times.popleft()
        if self.max_per_min and len(self._times) >= self.max_per_min:
            self.stats.skipped_rate += 1
            return False
        if self.stats.paused and self._disk_free_mb() < self.min_free_mb:
            self.stats.skipped_disk += 1
            return False
        try:
            self._queue.put_nowait((result, int(sec), int(nanosec), frame_id))
        except queue.Full:
            self.stats.skipped_queue += 1
            return False
        self._times.append(now)
        return True

    # -- the writer thread ---------------------------------------------------------------------------
    def _disk_free_mb(self) -> float:
        probe = self.folder if self.folder.exists() else self.folder.parent.parent
        try:
            free = shutil.disk_usage(probe).free / 2**20
        except OSError:
            free = float("nan")
        self.stats.disk_free_mb = free
        return free

    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except Exception as exc:  # a failed write never stops the camera; it is counted and shown
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._queue.task_done()

    def _write(self, result, sec: int, nanosec: int, frame_id: str) -> None:
        free = self._disk_free_mb()
        if free < self.min_free_mb:
            self.stats.paused = True
            self.stats.skipped_disk += 1
            return
        self.stats.paused = False
        from PIL import Image

        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{sec}_{nanosec:09d}"
        n = 1
        while (self.folder / f"{stem}.png").exists():
            stem, n = f"{sec}_{nanosec:09d}_{n}", n + 1
        sidecar = {
            "file": f"{stem}.png",
            "score": result.score,
            "raw_score": result.raw_score,
            "is_anomaly": result.is_anomaly,
            "threshold": {"value": result.threshold.value, "scale": result.threshold.scale},
            "model": self.model,
            "model_version": self.model_version,
            "stamp": {"sec": sec, "nanosec": nanosec},
            "frame_id": frame_id,
            "captured_as": "flagged" if result.is_anomaly else ("all" if self.mode == "all" else "normal_sample"),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        png, side = self.folder / f"{stem}.png", self.folder / f"{stem}.json"
        tmp_png, tmp_side = self.folder / f".{stem}.png.part", self.folder / f".{stem}.json.part"
        Image.fromarray(result.image).save(tmp_png, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        tmp_side.write_text(json.dumps(sidecar, indent=1))
        os.replace(tmp_png, png)  # the image first: a sidecar always has its image
        os.replace(tmp_side, side)
        self.stats.saved += 1
        self.stats.recent.append(png)

    # -- reporting and stopping ----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Key-value pairs for ``/diagnostics``."""
        s = self.stats
        state = "off" if self.mode == "off" else ("paused: disk nearly full" if s.paused else "on")
        return {
            "capture": f"{self.mode} ({state})",
            "capture_saved": s.saved,
            "capture_skipped_rate": s.skipped_rate,
            "capture_skipped_disk": s.skipped_disk,
            "capture_skipped_queue": s.skipped_queue,
            "capture_disk_free_mb": round(s.disk_free_mb, 1) if np.isfinite(s.disk_free_mb) else "unknown",
        }

    def problem(self) -> str:
        """A warning for ``/diagnostics`` (empty when all is well)."""
        if self.stats.paused:
            return (
                f"capture paused: {self.stats.disk_free_mb:.0f} MB free under {self.folder}, "
                f"below capture_min_free_mb {self.min_free_mb:.0f}"
            )
        if self.stats.errors:
            return f"capture: {self.stats.errors} frame(s) not saved: {self.stats.last_error}"
        return ""

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued frame is written (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=5.0)
            self._thread = None
