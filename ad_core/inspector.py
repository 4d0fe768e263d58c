"""Frame in, one typed result out: the ROS-free core that the node, ``infer``, ``predict`` and the panels call.

An :class:`Inspector` holds what an inspection station decides with, besides the model: the region
of interest, the live threshold and the one place a decision is made (:meth:`Scorer.__call__`
applies :class:`ad_core.scoring.Threshold`). It returns an :class:`Inspection`: raw score,
normalised score, ``is_anomaly``, the threshold in force, and the anomaly map at model resolution,
with the map at frame (ROI) size and the overlay computed only when asked, so a caller that
publishes them from another thread (the ROS node) keeps them off the scoring path.

The names are one vocabulary across meta.json, the CSVs, the ROS topics and the API:
``raw_score``, ``score`` (normalised, 0-1; ``normalized_score`` in the seed's CSV columns) and
``is_anomaly``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import ConfigError, DataError
from ad_core.filters import resize_map
from ad_core.scoring import Threshold


@dataclass(frozen=True)
class DefectRegion:
    """One connected region of the map at or above the pixel threshold, in frame pixels."""

    x: int
    y: int
    width: int
    height: int
    area: int
    """pixels of the region"""
    peak: float
    """the highest normalised map value in it"""
    centroid_x: float
    centroid_y: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (CSV columns, the node's PLC message)."""
        return {
            "x": self.x, "y": self.y, "width": self.width, "height": self.height, "area": self.area,
            "peak": round(self.peak, 4), "centroid": [round(self.centroid_x, 1), round(self.centroid_y, 1)],
        }  # fmt: skip


def find_regions(norm_map: np.ndarray, threshold: float, offset: tuple[int, int] = (0, 0)) -> list[DefectRegion]:
    """Connected regions (8-neighbour) of ``norm_map >= threshold``, largest peak first; ``offset`` shifts them."""
    from scipy import ndimage

    mask = np.asarray(norm_map) >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    boxes = ndimage.find_objects(labels)
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(mask, labels, index)
    peaks = ndimage.maximum(norm_map, labels, index)
    centres = ndimage.center_of_mass(mask, labels, index)
    ox, oy = offset
    out = []
    for box, area, peak, c in zip(boxes, areas, peaks, centres, strict=True):
        ys, xs = box
        out.append(
            DefectRegion(
                x=int(xs.start) + ox, y=int(ys.start) + oy, width=int(xs.stop - xs.start),
                height=int(ys.stop - ys.start), area=int(area), peak=float(peak),
                centroid_x=float(c[1]) + ox, centroid_y=float(c[0]) + oy,
            )
        )  # fmt: skip
    return sorted(out, key=lambda r: -r.peak)


@dataclass
class Inspection:
    """One image's result."""

    raw_score: float
    score: float
    is_anomaly: bool
    threshold: Threshold
    anomaly_map: np.ndarray
    """normalised 0-1, model resolution ``(S, S)`` (``(rows * S, cols * S)`` for a model trained on tiles)"""
    image: np.ndarray | None = None
    """the RGB the map belongs to: the frame, or its ROI"""
    file: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    pixel_threshold: float = 0.5
    """the normalised pixel threshold that cuts the map into the defect mask"""
    offset: tuple[int, int] = (0, 0)
    """where :attr:`image` starts in the frame (the ROI's corner): regions are given in frame pixels"""
    _full_map: np.ndarray | None = field(default=None, repr=False)
    _regions: list[DefectRegion] | None = field(default=None, repr=False)

    @property
    def decision(self) -> str:
        """``"anomaly"`` or ``"normal"`` (the seed's CSV column)."""
        return "anomaly" if self.is_anomaly else "normal"

    def map_at_image(self) -> np.ndarray:
        """The normalised map at the size of :attr:`image` (bilinear), computed once."""
        if self._full_map is None:
            if self.image is None:
                return self.anomaly_map
            self._full_map = resize_map(self.anomaly_map, self.image.shape[1], self.image.shape[0])
        return self._full_map

    def mask(self) -> np.ndarray:
        """Where the defect is: the map at image size at or above the pixel threshold (bool)."""
        return self.map_at_image() >= self.pixel_threshold

    def regions(self) -> list[DefectRegion]:
        """The defect regions (bounding box, area, peak, centroid) in frame pixels, computed once."""
        if self._regions is None:
            self._regions = find_regions(self.map_at_image(), self.pixel_threshold, self.offset)
        return self._regions

    def overlay(self) -> np.ndarray:
        """The heat map over the image (rgb8), for people."""
        from ad_core.viz import overlay

        if self.image is None:
            raise ValueError("this result keeps no image to draw the overlay on")
        return overlay(self.image, self.map_at_image())

    def row(self, regions: bool = False) -> dict[str, Any]:
        """The seed's CSV columns for this image; with ``regions`` also where the defects are.

        ``defects`` (how many regions), ``defect_area`` (their pixels) and ``regions`` (JSON: box, area,
        peak and centroid of each, in frame pixels) at the pixel threshold.
        """
        row = {
            "file": self.file,
            "raw_score": self.raw_score,
            "normalized_score": self.score,
            "decision": self.decision,
        }
        if regions:
            found = self.regions()
            row["defects"] = len(found)
            row["defect_area"] = sum(r.area for r in found)
            row["regions"] = json.dumps([r.as_dict() for r in found], separators=(",", ":"))
        return row


def check_roi(roi: Sequence[int] | None) -> tuple[int, int, int, int] | None:
    """``[x, y, width, height]`` as ints (all >= 0), or None for the whole frame (width or height 0)."""
    if roi is None:
        return None
    values = [int(v) for v in roi]
    if len(values) != 4 or min(values) < 0:
        raise ConfigError(f"roi {list(roi)}: give [x, y, width, height], all >= 0 (width or height 0: the whole frame)")
    return None if values[2] == 0 or values[3] == 0 else (values[0], values[1], values[2], values[3])


def crop_roi(rgb: np.ndarray, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """The ``(x, y, width, height)`` part of ``rgb`` (all of it for None); a frame it does not fit is refused."""
    if roi is None:
        return rgb
    x, y, w, h = roi
    if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
        raise DataError(f"roi {[x, y, w, h]} does not fit a {rgb.shape[1]}x{rgb.shape[0]} frame")
    return np.ascontiguousarray(rgb[y : y + h, x : x + w])


class Inspector:
    """Score frames with one :class:`ad_core.runtime.Scorer` under a region of interest and a live threshold.

    ``threshold`` and ``roi`` may be changed from another thread while frames are scored (a ROS
    parameter, a panel slider); each frame uses the values in force when it started. ``swap``
    replaces the model between frames.
    """

    def __init__(
        self,
        scorer: Any,
        *,
        roi: Sequence[int] | None = None,
        threshold: float | Threshold | None = None,
        pixel_threshold: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._scorer = scorer
        self._roi = check_roi(roi)
        self._threshold: Threshold | None = None
        self.threshold = threshold
        self._pixel: float | None = None
        self.pixel_threshold = pixel_threshold

    @classmethod
    def open(
        cls,
        source: Any,
        backend: str | None = None,
        *,
        roi=None,
        threshold=None,
        pixel_threshold: float | None = None,
        **open_options: Any,
    ) -> Inspector:
        """An inspector on :func:`ad_core.runtime.open_scorer` ``(source, backend, **open_options)``."""
        from ad_core.runtime import open_scorer

        scorer = open_scorer(source, backend, **open_options)
        return cls(scorer, roi=roi, threshold=threshold, pixel_threshold=pixel_threshold)

    @property
    def pixel_threshold(self) -> float:
        """The normalised pixel threshold in force: the one set, or meta.json's ``pixel_threshold``."""
        return self._pixel if self._pixel is not None else self._scorer.pixel_threshold

    @pixel_threshold.setter
    def pixel_threshold(self, value: float | None) -> None:
        """Set a normalised number (0-1), or None / a negative number for meta.json's."""
        if value is not None and float(value) >= 0:
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"pixel threshold {value}: a normalised threshold lies between 0 and 1")
            self._pixel = float(value)
        else:
            self._pixel = None

    # -- what is in force --------------------------------------------------------------------------
    @property
    def scorer(self) -> Any:
        """The model in use."""
        return self._scorer

    def swap(self, scorer: Any) -> None:
        """Use another model from the next frame on."""
        with self._lock:
            self._scorer = scorer

    @property
    def threshold(self) -> Threshold:
        """The threshold in force: the one set, or meta.json's normalised ``image_threshold``."""
        return self._threshold or Threshold(self._scorer.image_threshold)

    @threshold.setter
    def threshold(self, value: float | Threshold | None) -> None:
        """Set a normalised number, a :class:`Threshold`, or None (meta.json's); a negative number means None."""
        if value is not None and not isinstance(value, Threshold):
            value = None if float(value) < 0 else Threshold(float(value))
        self._threshold = value

    @property
    def roi(self) -> tuple[int, int, int, int] | None:
        """``(x, y, width, height)`` scored out of each frame, or None for the whole frame."""
        return self._roi

    @roi.setter
    def roi(self, value: Sequence[int] | None) -> None:
        self._roi = check_roi(value)

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        """The part of ``rgb`` that is scored; a frame the ROI does not fit is refused, naming both."""
        return crop_roi(rgb, self._roi)

    # -- scoring -----------------------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray, file: str | Path = "") -> Inspection:
        """Inspect one RGB uint8 frame (any size)."""
        return self.batch([rgb], [file])[0]

    def batch(self, images: Sequence[np.ndarray], files: Sequence[str | Path] | None = None) -> list[Inspection]:
        """Inspect several frames in one model call."""
        with self._lock:
            scorer = self._scorer
        threshold = self._threshold or Threshold(scorer.image_threshold)
        pixel = self._pixel if self._pixel is not None else scorer.pixel_threshold
        offset = (self._roi[0], self._roi[1]) if self._roi is not None else (0, 0)
        crops = [self.crop(im) for im in images]
        out = scorer(crops, threshold)
        timings = dict(scorer.timings)
        names = [str(f) for f in files] if files is not None else [""] * len(crops)
        return [
            Inspection(
                raw_score=float(out.raw_score[i]),
                score=float(out.score[i]),
                is_anomaly=bool(out.is_anomaly[i]),
                threshold=threshold,
                anomaly_map=out.anomaly_map[i],
                image=crops[i],
                file=names[i],
                timings=timings,
                pixel_threshold=pixel,
                offset=offset,
            )
            for i in range(len(crops))
        ]


@dataclass
class StreamStats:
    """What a stream of frames has seen (the ROS node publishes it on /diagnostics)."""

    received: int = 0
    scored: int = 0
    dropped: int = 0
    maps_skipped: int = 0
    malformed: int = 0
    last_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    def stage(self, name: str, ms: float) -> None:
        """Keep the last 100 timings of one stage of the path a frame takes."""
        values = self.stages_ms.setdefault(name, [])
        values.append(ms)
        del values[:-100]

    def latency(self, ms: float) -> None:
        """Keep the last 100 frame latencies (arrival to result published)."""
        self.latencies_ms.append(ms)
        del self.latencies_ms[:-100]

    def summary(self) -> dict[str, Any]:
        """Counts and the median of each stage: the key-value pairs of a diagnostics message."""
        lat = list(self.latencies_ms)
        # worker threads add stages while this runs: list() copies the dict in one step
        stages = {f"{k}_ms_median": round(float(np.median(v)), 2) for k, v in list(self.stages_ms.items()) if v}
        return {
            "received": self.received,
            "scored": self.scored,
            "dropped": self.dropped,
            "malformed": self.malformed,
            "maps_skipped": self.maps_skipped,
            "latency_ms_median": round(float(np.median(lat)), 2) if lat else 0.0,
            **stages,
        }
