"""Seed 003's pixel threshold: stored by `ad-core test`, applied to maps, masks and defect regions; old and broken meta."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from ad_core.bundle import PIXEL_KEYS, normalize_with
from ad_core.cli import main
from ad_core.errors import BundleError
from ad_core.inspector import Inspector, find_regions
from ad_core.runtime import open_scorer

CAT = "Sample_brick"


def test_regions_of_a_map():
    heat = np.zeros((40, 60), np.float32)
    heat[5:10, 8:20] = 0.7  # 5 x 12
    heat[7, 10] = 0.95
    heat[30:38, 50:53] = 0.6  # 8 x 3
    heat[20, 20] = 0.4  # below the threshold
    regions = find_regions(heat, 0.5, offset=(100, 200))
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [(108, 205, 12, 5, 60), (150, 230, 3, 8, 24)]
    assert regions[0].peak == pytest.approx(0.95) and regions[1].peak == pytest.approx(0.6)
    assert regions[0].centroid_x == pytest.approx(100 + 13.5) and regions[0].centroid_y == pytest.approx(207)
    assert find_regions(heat, 0.99) == []


@pytest.fixture
def tested(evaluated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated("padim")[0], run)
    return run


def test_test_stores_pixel_keys_and_maps_use_them(tested, sample_root):
    meta = json.loads((tested / "pytorch" / "meta.json").read_text())
    assert all(k in meta for k in PIXEL_KEYS) and meta["pixel_threshold"] == 0.5
    assert meta["pixel_threshold_source"] == "test_f1"
    metrics = json.loads((tested / "test_result" / "metrics.json").read_text())
    assert metrics["pixel_threshold_auto"] == meta["pixel_threshold_auto"] and metrics["pixel_f1"] > 0
    scorer = open_scorer(tested, "torch")
    from ad_core.data.images import list_images, read_image

    rgb = read_image(list_images(sample_root / "test" / CAT / "anomaly")[0])
    out = scorer([rgb])
    lo, hi, thr = meta["raw_pixel_min"], meta["raw_pixel_max"], meta["pixel_threshold_auto"]
    expected = np.clip((out.raw_map - thr) / (hi - lo) + 0.5, 0, 1)
    np.testing.assert_allclose(out.anomaly_map, expected, atol=1e-6)
    result = Inspector.open(tested, "torch", pixel_threshold=0.2)(rgb)
    assert result.pixel_threshold == 0.2 and result.mask().shape == rgb.shape[:2]
    assert result.mask().sum() == sum(r.area for r in result.regions()) > 0


def test_meta_without_pixel_keys_falls_back_to_the_image_keys(tested):
    path = tested / "pytorch" / "meta.json"
    meta = json.loads(path.read_text())
    for k in (*PIXEL_KEYS, "pixel_threshold", "pixel_threshold_source"):
        meta.pop(k)
    path.write_text(json.dumps(meta))
    scorer = open_scorer(tested, "torch")
    raw = np.linspace(meta["raw_image_min"], meta["raw_image_max"], 12, dtype=np.float32).reshape(1, 3, 4)
    np.testing.assert_allclose(scorer.normalize_map(raw), normalize_with(meta, raw), atol=1e-7)
    assert scorer.pixel_threshold == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pixel_threshold_auto": "high"}, "pixel_threshold_auto must be a number, found 'high'"),
        ({"raw_pixel_max": None}, "raw_pixel_max must be a number"),
        ({"pixel_threshold": 1.7}, "pixel_threshold must be a normalised number between 0 and 1, found 1.7"),
        (
            {"raw_pixel_min": "drop"},
            "raw_pixel_max, pixel_threshold_auto without raw_pixel_min|pixel keys come together",
        ),
    ],
)
def test_broken_pixel_keys_are_refused_clearly(tested, change, message):
    path = tested / "pytorch" / "meta.json"
    meta = json.loads(path.read_text())
    for k, v in change.items():
        if v == "drop":
            meta.pop(k)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=message.split("|")[-1]) as err:
        open_scorer(tested, "torch")
    assert "meta.json" in str(err.value)


def test_predict_writes_regions_into_inference_by_default(tested, sample_root, capsys):
    folder = sample_root / "test" / CAT / "anomaly"
    assert main(["predict", "--run", str(tested), str(folder), "--pixel_threshold", "0.3"]) == 0
    out = capsys.readouterr().out
    assert f"results: {tested / 'inference' / 'predictions.csv'}" in out  # seed 003's --save-path default
    with open(tested / "inference" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) >= {"file", "raw_score", "normalized_score", "decision", "defects", "regions"}
    with_regions = [r for r in rows if int(r["defects"]) > 0]
    assert len(with_regions) >= len(rows) // 2
    first = json.loads(with_regions[0]["regions"])[0]
    assert set(first) == {"x", "y", "width", "height", "area", "peak", "centroid"} and first["peak"] >= 0.3
    assert sum(r["area"] for r in json.loads(with_regions[0]["regions"])) == int(with_regions[0]["defect_area"])
    assert (tested / "inference" / f"{__import__('pathlib').Path(rows[0]['file']).stem}_mask.png").is_file()
