"""The quality harness takes a set of the user's own (``--sets DATA_ROOT:CATEGORY``) and counts it as real."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_quality


def test_own_set_is_found_and_counted_as_real(sample_root: Path) -> None:
    sets = bench_quality.prepare_sets([f"{sample_root}:Sample_brick"], sample_root)
    assert sets == [("Sample_brick", sample_root, "Sample_brick")]
    # the goal line counts it (the bundled textures, labelled "sample ...", are left out as synthetic)
    rows = [
        {"set": "Sample_brick", "ours": {"image_auroc": 0.95}, "anomalib": {"image_auroc": 0.90}},
        {"set": "sample brick", "ours": {"image_auroc": 0.50}, "anomalib": {"image_auroc": 0.90}},
    ]
    goal = bench_quality.goal_check(rows)
    assert goal["n_rows"] == 1 and goal["mean_delta"] == pytest.approx(5.0)


def test_own_set_errors_name_what_is_wrong(sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"Sample_nothing.*not found"):
        bench_quality.prepare_sets([f"{sample_root}:Sample_nothing"], sample_root)
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "absent"))):
        bench_quality.prepare_sets([f"{tmp_path / 'absent'}:Any"], sample_root)
    with pytest.raises(SystemExit, match="DATA_ROOT:CATEGORY"):
        bench_quality.prepare_sets(["magnetic"], sample_root)
