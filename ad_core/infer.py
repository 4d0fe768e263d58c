"""Per-model inference on a folder or image with an engine (seed ``3_jetson_infer/<model>``).

``infer(...)`` scores every image with :mod:`ad_core.runtime` (TensorRT for ``.plan``, ONNX
Runtime for ``.onnx``, PyTorch for ``.pth``), one image at a time as a camera would deliver them,
and writes ``result_<model>.csv``: file, raw score, normalised score, decision and latency
(preprocessing + graph + post-processing, file reading excluded). Unreadable files are skipped and
reported; the rest are still scored.

Thresholds: the seed's ``-t`` is a raw score threshold; ``--norm_threshold`` takes a normalised
one (0-1, meta.json's normalisation). Without either, meta.json's ``image_threshold`` (normalised)
is in force. The summary says which one decided and what it equals on the other scale.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ad_core.data.images import read_image
from ad_core.errors import ConfigError, DataError
from ad_core.fileio import write_bytes_atomic
from ad_core.inspector import Inspector
from ad_core.predict import expand_inputs
from ad_core.scoring import Threshold

CSV_FIELDS = ("file", "raw_score", "normalized_score", "decision", "latency_ms", "defects", "defect_area", "regions")


@dataclass
class InferReport:
    """Outcome of :func:`infer`."""

    model: str
    backend: str
    csv: Path
    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    raw_threshold: float = 0.0
    norm_threshold: float = 0.5
    threshold_source: str = ""
    bank_search: str = ""  # PatchCore's: cells, faiss, engine-tensorrt (the Jetson's GPU) ...

    @property
    def latencies(self) -> np.ndarray:
        """Per-image latency in ms."""
        return np.array([r["latency_ms"] for r in self.rows], dtype=np.float64)

    def summary(self) -> str:
        """A few lines for the terminal."""
        n = len(self.rows)
        bad = sum(r["decision"] == "anomaly" for r in self.rows)
        lines = [
            f"{self.model} on {self.backend}{f', bank search {self.bank_search}' if self.bank_search else ''}: "
            f"{n} images scored, {bad} anomalous, {len(self.skipped)} skipped",
            f"threshold in force: raw {self.raw_threshold:.6g} = normalised {self.norm_threshold:.4f} "
            f"({self.threshold_source})",
        ]
        if n:
            lat = self.latencies
            lines.append(
                f"latency per image: mean {lat.mean():.1f} ms, median {np.median(lat):.1f} ms, "
                f"p95 {np.percentile(lat, 95):.1f} ms"
            )
        lines += [f"skipped {name}: {why}" for name, why in self.skipped]
        lines.append(f"results: {self.csv}")
        return "\n".join(lines)


def infer(
    model: str,
    engine: str | Path,
    data: str | Path,
    *,
    image_size: int | None = None,
    threshold: float | None = None,
    norm_threshold: float | None = None,
    memory_bank: str | Path | None = None,
    meta_json: str | Path | None = None,
    backend: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    precision: str = "fp32",
    device: str | None = None,
    pixel_threshold: float | None = None,
) -> InferReport:
    """Score ``data`` (an image or a folder) with ``engine`` and write ``result_<model>.csv``.

    Args:
        model: the model the engine must hold.
        engine: ``model.plan``, ``model.onnx``, ``model.pth`` or a bundle folder.
        data: an image file or a folder of images.
        image_size: refuse to run unless the engine takes this size (seed ``-i``).
        threshold: raw score threshold (seed ``-t``).
        norm_threshold: normalised threshold (0-1); exclusive with ``threshold``.
        memory_bank: PatchCore's bank (default: the one beside the engine).
        meta_json: meta.json when it is not beside the engine.
        backend: force a backend for a bundle folder.
        out: CSV path (default ``result_<model>.csv`` in the current folder).
        progress: show a progress bar.
        precision: ``"bf16"`` for OpenVINO's faster reduced precision (see :func:`open_scorer`).
        device: ``auto`` / ``cpu`` / ``cuda[:N]``: ONNX Runtime's provider and the torch backend's
            device (default: CUDA where available); a ``.plan`` always runs on the GPU.
        pixel_threshold: normalised pixel threshold (0-1) that cuts the map into defect regions;
            default meta.json's ``pixel_threshold``. The regions (box, area, peak) go to the CSV.
    """
    if threshold is not None and norm_threshold is not None:
        raise ConfigError("give either -t/--threshold (raw) or --norm_threshold (0-1), not both")
    if norm_threshold is not None and not 0.0 <= norm_threshold <= 1.0:
        raise ConfigError(f"--norm_threshold {norm_threshold}: a normalised threshold lies between 0 and 1")
    if threshold is not None and not np.isfinite(threshold):
        raise ConfigError(f"-t/--threshold {threshold}: give a finite raw score")
    paths = expand_inputs([data])
    inspector = Inspector.open(
        engine,
        backend,
        memory_bank=memory_bank,
        meta_json=meta_json,
        model=model,
        image_size=image_size,
        precision=precision,
        device=device,
        pixel_threshold=pixel_threshold,
    )
    scorer = inspector.scorer
    if threshold is not None:
        inspector.threshold = Threshold(float(threshold), "raw")
        raw_thr, source = float(threshold), "raw, from -t/--threshold"
        norm_thr = float(scorer.normalize(raw_thr))
    else:
        norm_thr = scorer.image_threshold if norm_threshold is None else float(norm_threshold)
        inspector.threshold = norm_thr
        source = "normalised, from --norm_threshold" if norm_threshold is not None else "normalised, meta.json"
        raw_thr = scorer.raw_threshold(norm_thr)
    backend_name = scorer.backend if precision == "fp32" else f"{scorer.backend} ({precision})"
    report = InferReport(model, backend_name, Path(out) if out else Path(f"result_{model}.csv"))
    report.raw_threshold, report.norm_threshold, report.threshold_source = raw_thr, norm_thr, source
    report.bank_search = scorer.search.engine if scorer.search is not None else ""
    warmed = False
    for path in tqdm(paths, desc=f"{model} inference", disable=not progress, leave=False):
        try:
            rgb = read_image(path)
        except DataError as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        if not warmed:  # first call allocates and compiles; keep it out of the latency figures
            inspector(rgb)
            warmed = True
        start = time.perf_counter()
        result = inspector(rgb, path)
        latency = (time.perf_counter() - start) * 1000.0  # the score; the regions below are for the CSV
        report.rows.append({**result.row(regions=True), "latency_ms": latency})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in report.rows:
        writer.writerow(
            {
                **r,
                "raw_score": f"{r['raw_score']:.6g}",
                "normalized_score": f"{r['normalized_score']:.6f}",
                "latency_ms": f"{r['latency_ms']:.2f}",
            }
        )
    write_bytes_atomic(report.csv, buf.getvalue().encode())
    return report
