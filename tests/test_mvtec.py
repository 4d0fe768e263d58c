"""Real data: MVTec AD bottle (read from ../shared/data, never copied), through the CLI.

PatchCore and PaDiM at their defaults with the bundled EfficientNet-Lite0 must reach image AUROC >= 0.99
(anomalib 2.7 with the same backbone scores 1.00 with both). The test also sets the pixel-level
threshold from bottle's masks (seed 003), and the defect regions that threshold cuts from the maps
must overlap the ground truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MVTEC_ROOT
from test_cli import ad_core

pytestmark = [
    pytest.mark.mvtec,
    pytest.mark.skipif(not (MVTEC_ROOT / "bottle").is_dir(), reason="MVTec AD bottle not found in ../shared/data"),
]


@pytest.mark.parametrize(("model", "extra"), [("patchcore", []), ("padim", [])])
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
    assert metrics["image_auroc"] >= 0.99, metrics
    assert metrics["pixel_auroc"] > 0.9, metrics

    # the pixel threshold (seed 003) is stored beside the image keys, and cuts test_result's masks
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    if model == "patchcore":  # an object the pruned search handles well: auto keeps the plain (cheap) bank
        assert meta["whiten_mode"] == "auto" and meta["fit"]["plain_search_share"] < 0.05, meta["fit"]
        assert meta["fit"]["whitened"] is False
    assert meta["pixel_threshold_source"] == "test_f1" and meta["pixel_threshold"] == 0.5
    assert meta["raw_pixel_min"] < meta["pixel_threshold_auto"] < meta["raw_pixel_max"]
    assert metrics["pixel_f1"] > 0.3 and metrics["pixel_threshold_auto"] == meta["pixel_threshold_auto"]
    masks = sorted((run / "test_result" / "images" / "anomaly").glob("*_mask.png"))
    assert len(masks) == 63

    # the defect regions `predict` reports overlap the ground-truth masks
    from ad_core.data.images import read_mask
    from ad_core.data.layout import resolve_category
    from ad_core.predict import predict

    data = resolve_category(MVTEC_ROOT, "bottle")
    defects = [s for s in data.test if s.label == 1]
    results, _ = predict(run, [s.path for s in defects], backend="onnxruntime")
    ious, boxes_hit = [], 0
    for sample, result in zip(defects, results, strict=True):
        truth = read_mask(sample.mask)  # at the image's size, as the regions are
        found = result.mask()
        ious.append((found & truth).sum() / max(1, (found | truth).sum()))
        ys, xs = np.nonzero(truth)
        boxes_hit += any(
            r.x <= xs.mean() < r.x + r.width and r.y <= ys.mean() < r.y + r.height for r in result.regions()
        )
    ious = np.array(ious)
    assert (ious > 0.3).mean() > 0.6, f"IoU > 0.3 on only {(ious > 0.3).mean():.0%} of the defects: {np.round(ious, 2)}"
    assert boxes_hit >= 0.8 * len(defects), f"a region covers the defect's centre on {boxes_hit} of {len(defects)}"
