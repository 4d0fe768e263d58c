"""Real data: MVTec AD bottle (read from ../shared/data, never copied), through the CLI.

PatchCore and PaDiM with the bundled EfficientNet-Lite0 must reach image AUROC >= 0.98 (anomalib
2.7 with the same backbone scores 1.00 with both). PatchCore uses coreset ratio 0.01 here to keep
CI short; docs/benchmarks.md has the 0.1 figure.
"""

from __future__ import annotations

import json

import pytest
from conftest import MVTEC_ROOT
from test_cli import ad_core

pytestmark = [
    pytest.mark.mvtec,
    pytest.mark.skipif(not (MVTEC_ROOT / "bottle").is_dir(), reason="MVTec AD bottle not found in ../shared/data"),
]


@pytest.mark.parametrize(("model", "extra"), [("patchcore", ["--coreset_ratio", "0.01"]), ("padim", [])])
def test_bottle_auroc_with_bundled_backbone(model, extra, tmp_path):
    rc, _out, err = ad_core(
        "train",
        "--model",
        model,
        "--category",
        "MVTec_bottle",
        "--data_root",
        MVTEC_ROOT,
        "--models_root",
        tmp_path,
        "--image_size",
        256,
        "--test",
        *extra,
    )
    assert rc == 0, err
    run = next(tmp_path.glob("*/MVTec_bottle/*"))
    metrics = json.loads((run / "test_result" / "metrics.json").read_text())
    assert metrics["n_normal"] == 20 and metrics["n_anomaly"] == 63
    assert metrics["image_auroc"] >= 0.98, metrics
    assert metrics["pixel_auroc"] > 0.9, metrics
