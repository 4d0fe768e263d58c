"""The ablation bench measures variants of the shipped PaDiM, not a reimplementation of it.

Its ``default`` variant, fitted and scored on cached features, must give what ``train`` + ``evaluate``
give; its ``anomalib`` variant what anomalib's own PaDiM gives in the quality harness. Otherwise the
Δ it reports against either would compare two different pipelines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_ablation
import bench_quality


def test_default_and_anomalib_variants_reproduce_the_shipped_and_the_peer_model(
    sample_root: Path, tmp_path: Path
) -> None:
    from ad_core import evaluate, train

    size = 128  # the harness runs 256 px; the pipelines are the same at any size
    cached = bench_ablation.cache_features("brick", sample_root, "Sample_brick", size)
    assert len(cached.train) * 8 >= 32 and len(cached.labels) == 28

    run = train("padim", "Sample_brick", sample_root, tmp_path / "models", image_size=size, progress=False)
    report = evaluate(run, sample_root, save_images=False, progress=False)
    default = bench_ablation.run_variant(bench_ablation.parse_variant("default"), cached)
    # training fits on 90 %, calibrates on 10 % and then merges them exactly: the same Gaussian as a fit on all
    assert default["image_auroc"] == pytest.approx(report["image_auroc"], abs=1e-9)
    assert default["pixel_auroc"] == pytest.approx(report["pixel_auroc"], abs=1e-4)

    peer = bench_quality.run_anomalib("padim", sample_root, "Sample_brick", "ours", size)
    ours_as_anomalib = bench_ablation.run_variant(bench_ablation.parse_variant("anomalib"), cached)
    # the same channel draw and estimator; only the pre-processor differs (ours equals torchvision's to 1e-5)
    assert ours_as_anomalib["image_auroc"] == pytest.approx(peer["image_auroc"], abs=2e-3)
    assert ours_as_anomalib["pixel_auroc"] == pytest.approx(peer["pixel_auroc"], abs=2e-3)

    # a variant that changes the image score keeps the maps, so only the image AUROC may move
    p99 = bench_ablation.run_variant(bench_ablation.parse_variant("p99"), cached)
    assert p99["pixel_auroc"] == pytest.approx(default["pixel_auroc"], abs=1e-9)


def test_another_backbone_reaches_both_the_features_and_the_model(sample_root: Path, tmp_path: Path) -> None:
    """``--backbone``: the cached features are that backbone's, and ``default`` is ``train --backbone`` on them."""
    from ad_core import evaluate, train

    size, backbone = 128, "tf_efficientnet_lite2"
    cached = bench_ablation.cache_features("brick", sample_root, "Sample_brick", size, backbone)
    assert {k: v.shape[1] for k, v in cached.train[0].items()} == {"blocks.2": 48, "blocks.4": 120}  # Lite2's widths

    run = train(
        "padim", "Sample_brick", sample_root, tmp_path / "models", image_size=size, backbone=backbone, progress=False
    )
    report = evaluate(run, sample_root, save_images=False, progress=False)
    default = bench_ablation.run_variant(bench_ablation.parse_variant("default"), cached)
    assert default["image_auroc"] == pytest.approx(report["image_auroc"], abs=1e-9)
    assert default["pixel_auroc"] == pytest.approx(report["pixel_auroc"], abs=1e-4)


def test_variants_combine_and_unknown_names_are_refused() -> None:
    v = bench_ablation.parse_variant("anomalib+cbrt+p99")
    assert v.hparams == {"n_features": 100, "shrinkage": 0.0, "feature_pool": 1}
    assert len(v.transforms) == 1 and v.score is bench_ablation.VARIANTS["p99"].score
    assert bench_ablation.parse_variant("default").score is None
    with pytest.raises(SystemExit, match=r"'cube'.*choose from .*cbrt"):
        bench_ablation.parse_variant("default+cube")


def test_position_share_tells_a_texture_from_an_aligned_part() -> None:
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    shapes = {"blocks.2": (40, 16, 16), "blocks.4": (112, 8, 8)}  # Lite0's maps at 128 px
    pattern = {k: 10 * torch.randn(s, generator=g) for k, s in shapes.items()}  # the same at each position, every image

    def cached(per_position: bool) -> bench_ablation.CachedSet:
        batches = [
            {k: torch.randn(8, *s, generator=g) + (pattern[k] if per_position else 0) for k, s in shapes.items()}
            for _ in range(8)
        ]
        return bench_ablation.CachedSet("synthetic", batches, [], np.zeros(0), [], 0.0, 128)

    texture, part = bench_ablation.position_share(cached(False)), bench_ablation.position_share(cached(True))
    assert texture < 0.05  # 64 images of noise: only the means' sampling spread, about 1/64
    assert part > 0.9
