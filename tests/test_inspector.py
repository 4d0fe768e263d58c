"""The ROS-free per-frame logic: Inspector (ROI, live threshold, one decision, maps at frame size), jobs, staging."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ad_core.data.images import read_image
from ad_core.errors import ConfigError, DataError, TrainingStopped
from ad_core.inspector import Inspector, StreamStats
from ad_core.jobs import Job, JobSlot, NewestSlot
from ad_core.rundir import RunDir, staged
from ad_core.scoring import Threshold


@pytest.fixture(scope="module")
def inspector(evaluated):
    return Inspector.open(evaluated("padim")[0])


@pytest.fixture(scope="module")
def frame(sample_root):
    return read_image(sorted((sample_root / "test" / "Sample_brick" / "anomaly").glob("*.png"))[0])


def test_the_inspection_is_the_scorer_s_result_and_decision(inspector, frame):
    result = inspector(frame, "f.png")
    direct = inspector.scorer([frame])
    assert result.raw_score == pytest.approx(float(direct.raw_score[0]), rel=1e-6)
    assert result.score == pytest.approx(float(direct.score[0]), abs=1e-7)
    assert result.is_anomaly == bool(direct.is_anomaly[0]) and result.decision in ("anomaly", "normal")
    assert result.threshold == Threshold(inspector.scorer.image_threshold)
    assert result.row() == {"file": "f.png", "raw_score": result.raw_score, "normalized_score": result.score,
                            "decision": result.decision}  # fmt: skip
    full = result.map_at_image()
    assert full.shape == frame.shape[:2] and full.dtype == np.float32
    assert result.overlay().shape == frame.shape and result.overlay().dtype == np.uint8
    assert result.map_at_image() is full  # resized once, when first asked


def test_roi_scores_the_crop_and_maps_it_at_its_size(inspector, frame):
    x, y, w, h = 10, 20, frame.shape[1] // 2, frame.shape[0] // 3
    try:
        inspector.roi = [x, y, w, h]
        result = inspector(frame)
        crop = frame[y : y + h, x : x + w]
        assert result.raw_score == pytest.approx(float(inspector.scorer([crop]).raw_score[0]), rel=1e-6)
        assert result.image.shape[:2] == (h, w) and result.map_at_image().shape == (h, w)
        inspector.roi = [x, y, frame.shape[1], h]
        with pytest.raises(DataError, match=rf"roi \[{x}, {y}, {frame.shape[1]}, {h}\] does not fit a"):
            inspector(frame)
        with pytest.raises(ConfigError, match="all >= 0"):
            inspector.roi = [0, 0, -1, 5]
    finally:
        inspector.roi = [0, 0, 0, 0]  # width 0: the whole frame
    assert inspector.roi is None and inspector(frame).image.shape == frame.shape


def test_the_threshold_changes_live_on_both_scales(inspector, frame):
    raw = inspector(frame).raw_score
    try:
        inspector.threshold = 0.0
        assert inspector(frame).is_anomaly
        inspector.threshold = 1.0
        assert inspector(frame).is_anomaly == (inspector(frame).score >= 1.0)
        inspector.threshold = Threshold(raw, "raw")  # the seed's -t: exactly at the score is anomalous
        assert inspector(frame).is_anomaly
        inspector.threshold = Threshold(float(np.nextafter(raw, np.inf)), "raw")
        assert not inspector(frame).is_anomaly
    finally:
        inspector.threshold = -1.0  # meta.json's again
    assert inspector.threshold == Threshold(inspector.scorer.image_threshold)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Threshold(1.5)
    with pytest.raises(ValueError, match="scale"):
        Threshold(0.5, "percent")


def test_stream_stats_summarise_counts_and_stage_medians():
    stats = StreamStats()
    for ms in range(150):
        stats.stage("graph", float(ms))
        stats.latency(float(ms))
    stats.received, stats.dropped = 7, 2
    summary = stats.summary()
    assert summary["received"] == 7 and summary["dropped"] == 2
    assert summary["graph_ms_median"] == pytest.approx(99.5) and summary["latency_ms_median"] == pytest.approx(99.5)


def test_jobs_report_done_failed_stopped_and_one_runs_at_a_time():
    slot, ended = JobSlot(), []
    gate = threading.Event()
    ok, message = slot.start("retrain", lambda stop: gate.wait(10) and "new model", on_end=ended.append)
    assert ok and message == "retrain started"
    busy, why = slot.start("convert", lambda stop: None)
    assert not busy and why.startswith("busy: retrain running since")
    gate.set()
    slot.job.join(10)
    assert ended[0].info() == {"kind": "retrain", "state": "done", "since": ended[0].since, "message": "new model"}

    def fails(stop):
        raise RuntimeError("disk full")

    def stops(stop):
        stop.wait(10)
        raise TrainingStopped("training stopped on request")

    failed = Job(fails, kind="convert").start()
    failed.join(10)
    assert failed.state == "failed" and failed.message == "RuntimeError: disk full"
    stopped = Job(stops, kind="train").start()
    stopped.stop()
    stopped.join(10)
    assert stopped.state == "stopped" and not stopped.running


def test_newest_slot_hands_over_the_newest_item_only():
    slot, stop = NewestSlot(), threading.Event()
    assert not slot.put(1) and slot.put(2)  # 2 replaced 1, which was still waiting
    assert slot.take(stop) == 2
    threading.Timer(0.2, lambda: (stop.set(), slot.wake())).start()
    start = time.monotonic()
    assert slot.take(stop) is None and time.monotonic() - start < 5


def test_staging_keeps_what_was_saved_when_the_work_fails(tmp_path):
    final = tmp_path / "test_result"
    with staged(final, "replace") as stage:
        (stage.path / "predictions.csv").write_text("old")
    with pytest.raises(RuntimeError), staged(final, "replace") as stage:
        (stage.path / "predictions.csv").write_text("half")
        raise RuntimeError("crash while testing")
    assert (final / "predictions.csv").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["test_result"]
    out = tmp_path / "engine"
    (out).mkdir()
    (out / "notes.txt").write_text("the user's")
    with staged(out, "merge") as stage:
        (stage.path / "model.onnx").write_text("graph")
        (stage.path / "meta.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.onnx", "notes.txt"]
    run = tmp_path / "models" / "PaDiM" / "X" / "20250101_000000"
    run.mkdir(parents=True)
    (run / "param").mkdir()
    (run / "param" / "trials.csv").write_text("tuning")
    with staged(run, "replace", keep=("param",)) as stage:
        (stage.path / "pytorch").mkdir()
        (stage.path / "pytorch" / "meta.json").write_text("{}")
    assert (run / "param" / "trials.csv").read_text() == "tuning" and RunDir(run).trained
