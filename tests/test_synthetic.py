"""Synthetic anomalies (the proxy's defects): each one lies exactly where its mask says."""

from __future__ import annotations

import numpy as np
import pytest

from ad_core.data.images import read_image
from ad_core.data.synthetic import GENERATORS, KINDS, MIN_CHANGE, make_anomaly, smooth_noise_mask, synthetic_set


@pytest.fixture(scope="module")
def photos(sample_root):
    from ad_core.data.images import list_images

    return [read_image(p) for p in list_images(sample_root / "train" / "Sample_brick")[:6]]


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_anomaly_is_where_the_mask_says(photos, kind):
    rng = np.random.default_rng(3)
    for rgb in photos:
        out, mask = make_anomaly(rgb, kind, rng)
        assert out.shape == rgb.shape and out.dtype == np.uint8 and mask.shape == rgb.shape[:2]
        assert mask.any(), "an anomaly with an empty mask"
        changed = (out != rgb).any(-1)
        # outside the mask every pixel is the input's, and every mask pixel changed
        np.testing.assert_array_equal(changed, mask)
        diff = np.abs(out.astype(int) - rgb.astype(int)).max(-1)
        assert diff[mask].mean() >= MIN_CHANGE * 0.5
        assert 0.0005 < mask.mean() < 0.2, f"{kind} covers {mask.mean():.3%} of the image"


def test_grey_images_get_grey_anomalies(photos):
    grey = np.repeat(photos[0].mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    rng = np.random.default_rng(0)
    for kind in GENERATORS:
        out, mask = make_anomaly(grey, kind, rng)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all(), kind
        np.testing.assert_array_equal((out != grey).any(-1), mask)


def test_set_is_deterministic_and_cycles_kinds(photos):
    a = synthetic_set(photos[:3], per_image=2, seed=5)
    b = synthetic_set(photos[:3], per_image=2, seed=5)
    assert [k for _, _, k in a] == [KINDS[i % len(KINDS)] for i in range(6)]
    for (ia, ma, _), (ib, mb, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    c = synthetic_set(photos[:3], per_image=2, seed=6)
    assert any((x[0] != y[0]).any() for x, y in zip(a, c, strict=True))


def test_a_crack_is_one_thin_line(photos):
    from scipy import ndimage

    rng = np.random.default_rng(7)
    for rgb in photos:
        _, mask = make_anomaly(rgb, "crack", rng)
        side = min(mask.shape)
        assert ndimage.label(mask, np.ones((3, 3)))[1] == 1  # one line, not specks
        assert ndimage.distance_transform_edt(mask).max() <= 0.012 * side / 2 + 1.5  # at most 1.2 % wide
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) >= 4 * ndimage.distance_transform_edt(mask).max()  # long, not a dot


def test_noise_mask_is_one_region():
    from scipy import ndimage

    mask = smooth_noise_mask((128, 160), np.random.default_rng(1), (0.02, 0.04))
    assert ndimage.label(mask)[1] == 1 and 0.0 < mask.mean() <= 0.04 + 1e-9


def test_unknown_kind_is_refused(photos):
    with pytest.raises(ValueError, match="choose one of cutpaste"):
        make_anomaly(photos[0], "glitter", np.random.default_rng(0))
