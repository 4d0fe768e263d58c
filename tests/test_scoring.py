"""Seed 003: normalisation formula and the F1-optimal threshold."""

from __future__ import annotations

import numpy as np
import pytest

from ad_core.scoring import best_f1_threshold, confusion, denormalize, image_auroc, normalize


def brute_force_best_f1(labels, scores):
    best = (-1.0, None)
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        fp = np.sum(pred & (labels == 0))
        fn = np.sum(~pred & (labels == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0] + 1e-12:
            best = (f1, t)
    return best


def test_normalize_matches_seed_003_formula():
    assert normalize(8.0, threshold=8.0, min_val=6.0, max_val=20.0) == pytest.approx(0.5)
    assert normalize(13.6, threshold=8.0, min_val=6.0, max_val=20.0) == pytest.approx(0.9)
    assert normalize(100.0, 8.0, 6.0, 20.0) == 1.0
    assert normalize(-100.0, 8.0, 6.0, 20.0) == 0.0
    arr = normalize(np.array([6.0, 8.0, 20.0]), 8.0, 6.0, 20.0)
    np.testing.assert_allclose(arr, [0.5 - 2 / 14, 0.5, 1.0], rtol=1e-6)  # 0.5 + 12/14 clips to 1
    # seed 001's PatchCore example values
    assert normalize(8.257281303405762, 8.257281303405762, 6.724304676055908, 20.64291000366211) == 0.5


def test_normalize_zero_range_is_defined():
    assert normalize(1.0, 1.0, 3.0, 3.0) == 0.5


def test_denormalize_inverts_normalize():
    for v in (0.1, 0.5, 0.77):
        raw = denormalize(v, 8.0, 6.0, 20.0)
        assert normalize(raw, 8.0, 6.0, 20.0) == pytest.approx(v)


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_is_f1_optimal(seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(30, int), np.ones(20, int)]
    scores = np.r_[rng.normal(0, 1, 30), rng.normal(1.5, 1, 20)]
    got = best_f1_threshold(labels, scores)
    f1, thr = brute_force_best_f1(labels, scores)
    assert got["f1"] == pytest.approx(f1, abs=1e-6)
    assert got["threshold"] == pytest.approx(thr)


def test_best_f1_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        best_f1_threshold([0, 0, 0], [1.0, 2.0, 3.0])


def test_auroc_and_confusion():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert confusion([0, 1, 1, 0], [0, 1, 0, 1]) == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}


def test_evaluate_threshold_is_f1_optimal_on_real_run(evaluated):
    import csv

    run, report = evaluated("patchcore")
    with open(run / "test_result" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    labels = np.array([r["label"] == "anomaly" for r in rows], int)
    scores = np.array([float(r["raw_score"]) for r in rows])
    f1, thr = brute_force_best_f1(labels, scores)
    assert report["image_f1"] == pytest.approx(f1, abs=1e-6)
    assert report["image_threshold_auto"] == pytest.approx(thr, rel=1e-5)


def test_overlay_lut_matches_the_float_colour_map():
    from matplotlib import colormaps

    from ad_core.viz import overlay

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    heat = rng.random((48, 64)).astype(np.float32) * 1.2 - 0.1  # outside [0, 1] is clipped
    reference = 0.55 * rgb / 255.0 + 0.45 * colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    got = overlay(rgb, heat)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    assert np.abs(got.astype(int) - (reference * 255 + 0.5).astype(int)).max() <= 3
    assert overlay(rgb, np.zeros((12, 16), np.float32)).shape == rgb.shape  # any map size is resized


@pytest.mark.parametrize("size", [(1, 1, 256, 256), (2, 1, 40, 56), (1, 3, 17, 17)])
def test_blurs_match_anomalibs_full_2d_gaussian(size):
    """The separable torch blur (graphs) and the numpy one (PatchCore's runtime) are anomalib's blur."""
    import torch
    from anomalib.models.components import GaussianBlur2d

    from ad_core.filters import gaussian_blur, gaussian_blur_numpy

    x = torch.from_numpy(np.random.default_rng(1).random(size, dtype=np.float32) * 5)
    sigma = 4.0
    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    reference = GaussianBlur2d(sigma=(sigma, sigma), channels=size[1], kernel_size=(kernel, kernel))(x).numpy()
    np.testing.assert_allclose(gaussian_blur(x).numpy(), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gaussian_blur_numpy(x.numpy()), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("b", "h", "w", "out"), [(1, 32, 32, 256), (3, 16, 16, 128), (2, 25, 19, 200), (1, 7, 7, 5)])
def test_patchcore_map_as_two_products_is_anomalibs_resize_and_blur(b, h, w, out):
    """PatchCore's map: anomalib resizes the patch scores (nearest) and blurs them with its 2-D Gaussian;
    ``nearest_resize_blur`` does both as one matrix per axis and gives the same map."""
    import torch
    import torch.nn.functional as F
    from anomalib.models.components import GaussianBlur2d

    from ad_core.filters import gaussian_blur_numpy, nearest_resize, nearest_resize_blur

    x = np.random.default_rng(3).random((b, 1, h, w), dtype=np.float32) * 5
    up = F.interpolate(torch.from_numpy(x), size=(out, out))
    reference = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33))(up).numpy() if out > 16 else None
    got = nearest_resize_blur(x, out)
    assert got.shape == (b, 1, out, out) and got.dtype == np.float32
    if reference is not None:  # anomalib's reflect padding needs a map wider than its kernel's half
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, gaussian_blur_numpy(nearest_resize(x, out)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, nearest_resize(x, out), atol=1e-2)  # it does blur


@pytest.mark.parametrize(
    ("b", "h", "w", "out"), [(1, 32, 32, (256, 256)), (3, 16, 16, (128, 128)), (2, 25, 19, (200, 150))]
)
def test_padim_map_as_two_products_is_anomalibs_resize_and_blur(b, h, w, out):
    """PaDiM's graph: anomalib resizes the distances bilinearly and blurs them; ``resize_blur`` gives that
    map as two constant matrices, in torch and in the ONNX graph exported from it."""
    import io

    import onnxruntime as ort
    import torch
    import torch.nn.functional as F
    from anomalib.models.components import GaussianBlur2d

    from ad_core.filters import resize_blur

    x = torch.from_numpy(np.random.default_rng(4).random((b, 1, h, w), dtype=np.float32) * 5)
    up = F.interpolate(x, size=out, mode="bilinear", align_corners=False)
    reference = GaussianBlur2d(sigma=(4.0, 4.0), channels=1, kernel_size=(33, 33))(up).numpy()
    got = resize_blur(x, out, 4.0, "bilinear")
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-5, atol=1e-5)

    class Map(torch.nn.Module):
        def forward(self, d):
            return resize_blur(d, out, 4.0, "bilinear")

    buf = io.BytesIO()
    torch.onnx.export(Map(), (x[:1],), buf, input_names=["d"], dynamic_axes={"d": {0: "b"}}, dynamo=False)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"d": x.numpy()})[0], reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("h", "w", "out"), [(32, 32, 256), (16, 16, 128), (28, 28, 224), (25, 19, 200), (7, 7, 5)])
def test_nearest_resize_matches_torch(h, w, out):
    import torch
    import torch.nn.functional as F

    from ad_core.filters import nearest_resize

    x = np.random.default_rng(2).random((2, 1, h, w), dtype=np.float32)
    np.testing.assert_array_equal(nearest_resize(x, out), F.interpolate(torch.from_numpy(x), size=(out, out)).numpy())
