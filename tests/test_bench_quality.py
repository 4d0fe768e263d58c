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


def test_downloaded_public_sets_are_imported_and_counted_as_real(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from ad_core.data.layout import resolve_category

    tiles = tmp_path / "Magnetic-tile-defect-datasets."
    ksdd2 = tmp_path / "KolektorSDD2"
    for n, (folder, stem, defect) in enumerate(
        [(tiles / "MT_Free" / "Imgs", f"exp1_num_{i}", False) for i in range(4)]
        + [(tiles / "MT_Crack" / "Imgs", "exp1_num_9", True)]
        + [(ksdd2 / "train", f"1000{i}", False) for i in range(3)]
        + [(ksdd2 / "test", "20000", False), (ksdd2 / "test", "20001", True)]
    ):
        folder.mkdir(parents=True, exist_ok=True)
        mask = np.zeros((24, 16), np.uint8)
        mask[4:8, 4:8] = 255 if defect else 0
        Image.fromarray(np.full((24, 16), 40 + n, np.uint8)).save(
            folder / f"{stem}.{'jpg' if 'MT_' in str(folder) else 'png'}"
        )
        Image.fromarray(mask).save(folder / (f"{stem}.png" if "MT_" in str(folder) else f"{stem}_GT.png"))
    root = tmp_path / "data"
    sets = bench_quality.prepare_sets([f"magnetic-tile:{tiles}", f"kolektor:{ksdd2}"], root)
    assert sets == [("MT tile", root, "MT_tile"), ("Kolektor SDD2", root, "Kolektor_SDD2")]
    for _, r, category in sets:
        assert resolve_category(r, category, require_test=True).has_masks
    rows = [{"set": label, "ours": {"image_auroc": 0.9}, "anomalib": {"image_auroc": 0.8}} for label, _, _ in sets]
    assert bench_quality.goal_check(rows)["n_rows"] == 2  # both count as real sets
    with pytest.raises(SystemExit, match=r"--sets kolektor:.*nowhere does not exist"):
        bench_quality.prepare_sets([f"kolektor:{tmp_path / 'nowhere'}"], root)
