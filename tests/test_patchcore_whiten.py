"""PatchCore's whitening (``whiten``, ``whiten_mode``): when it is chosen, the matrix whitens, is saved with the
bank, and every runtime applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import module_forward

from ad_core import load_bundle, train
from ad_core.data.images import read_image
from ad_core.data.layout import resolve_category
from ad_core.export import export_onnx
from ad_core.models import get_spec
from ad_core.models.patchcore.graph import EmbeddingGraph
from ad_core.models.patchcore.knn import CellIndex
from ad_core.models.patchcore.model import whitening_matrix
from ad_core.runtime import open_scorer


def test_whitening_matrix_makes_correlated_features_uncorrelated_with_unit_variance():
    rng = np.random.default_rng(0)
    scales = np.array([30.0, 10.0, 5.0, 3.0, 2.0, 1.0, 1.0, 1.0])
    rotation, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    x = torch.from_numpy(((rng.standard_normal((20000, 8)) * scales) @ rotation).astype(np.float32))
    assert np.abs(np.cov(x.numpy().T) - np.diag(np.diag(np.cov(x.numpy().T)))).max() > 10  # correlated before

    w = whitening_matrix(x, 0.0).numpy()
    np.testing.assert_allclose(w, w.T, atol=1e-5)
    np.testing.assert_allclose(np.cov((x.numpy() @ w).T), np.eye(8), atol=0.05)  # +0.01 I: variances 0.99

    # full shrinkage keeps the geometry: a multiple of the identity, the distances only rescaled
    w1 = whitening_matrix(x, 1.0).numpy()
    np.testing.assert_allclose(w1, w1[0, 0] * np.eye(8), atol=1e-6 * w1[0, 0])


def _nn_max(embedding: np.ndarray, bank: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Brute-force PatchCore score with one neighbour: the largest patch distance to the bank."""
    b, d = embedding.shape[:2]
    flat = embedding.transpose(0, 2, 3, 1).reshape(b, -1, d).astype(np.float64)
    if w is not None:
        flat = flat @ w
    d2 = (flat**2).sum(-1)[..., None] + (bank.astype(np.float64) ** 2).sum(-1) - 2 * flat @ bank.T.astype(np.float64)
    return np.sqrt(np.maximum(d2.min(-1), 0)).max(-1)


def test_whitened_patchcore_saves_its_matrix_and_every_runtime_searches_in_that_space(sample_root, tmp_path):
    run = train(
        "patchcore",
        "Sample_brick",
        sample_root,
        tmp_path,
        progress=False,
        image_size=96,
        whiten_mode="always",
        num_neighbors=1,
    )
    bundle = load_bundle(run)
    assert (bundle.meta["whiten"], bundle.meta["whiten_mode"], bundle.meta["fit"]["whitened"]) == (0.1, "always", True)
    saved = np.load(run / "pytorch" / "memory_bank.npz")
    w, bank = saved["whitening"], saved["memory_bank"]
    assert w.shape == (bank.shape[1], bank.shape[1])
    np.testing.assert_allclose(w, w.T, atol=1e-5)
    np.testing.assert_array_equal(bundle.model.artifacts()["whitening"], w)  # reloaded, so a merge reuses it

    data = resolve_category(sample_root, "Sample_brick")
    picks = [s for s in data.test if s.label == 0][:3] + [s for s in data.test if s.label == 1][:3]
    images = [read_image(s.path) for s in picks]
    with torch.no_grad():
        emb = EmbeddingGraph(bundle.model.module)(torch.stack([bundle.preprocess(im) for im in images])).numpy()
    expected = _nn_max(emb, bank, w)
    unwhitened = _nn_max(emb, bank, None)
    assert not np.allclose(expected, unwhitened, rtol=0.05)  # so matching ``expected`` means the matrix was used
    # anomalib's own forward, its embedding whitened by the same matrix, agrees (tests' shared reference)
    anomalib = module_forward(bundle, torch.stack([bundle.preprocess(im) for im in images]))
    np.testing.assert_allclose(anomalib.pred_score.reshape(-1).numpy(), expected, rtol=1e-4)

    path = export_onnx(bundle, tmp_path / "model.onnx")
    for backend, kwargs in (("torch", {}), ("onnxruntime", {"onnx_path": path})):
        out = open_scorer(bundle, backend, **kwargs)(images)
        np.testing.assert_allclose(out.raw_score, expected, rtol=1e-4)
    assert expected[3:].min() > expected[:3].max()  # the defects stand out in the whitened space too


def test_a_whitening_of_the_wrong_width_is_refused(tmp_path):
    from ad_core.errors import BundleError
    from ad_core.models.patchcore.head import PatchcoreHead

    with pytest.raises(BundleError, match=r"whitening.*\(3, 3\)"):
        PatchcoreHead(np.ones((4, 3), np.float32), whitening=np.eye(4, dtype=np.float32))


def test_auto_whitens_a_texture_whose_plain_bank_the_search_cannot_prune(sample_root, tmp_path):
    """The default (``whiten_mode`` auto) probes the plain bank with the held-out images and whitens brick."""
    run = train("patchcore", "Sample_brick", sample_root, tmp_path, progress=False, image_size=96)
    meta = json.loads((run / "pytorch" / "meta.json").read_text())
    assert (meta["whiten"], meta["whiten_mode"]) == (0.1, "auto")
    assert meta["fit"]["plain_search_share"] > CellIndex.pays_below and meta["fit"]["whitened"] is True
    saved = np.load(run / "pytorch" / "memory_bank.npz")
    assert saved["whitening"].shape == (saved["memory_bank"].shape[1],) * 2
    # without held-out images there is nothing to probe with: the plain bank stays
    run = train(
        "patchcore", "Sample_brick", sample_root, tmp_path / "no_val", progress=False, image_size=96, val_fraction=0
    )
    fit = json.loads((run / "pytorch" / "meta.json").read_text())["fit"]
    assert (fit["plain_search_share"], fit["whitened"]) == (None, False)
    assert "whitening" not in np.load(run / "pytorch" / "memory_bank.npz")


@pytest.mark.parametrize(
    ("made_with", "missing", "legacy"),
    [
        ({"whiten": 0.0}, ("whiten", "whiten_mode"), {"whiten": 0.0}),  # before whitening existed: none
        ({"whiten_mode": "always"}, ("whiten_mode",), {"whiten": 0.1, "whiten_mode": "always"}),  # opt-in whitening
    ],
    ids=["before-whitening", "before-auto"],
)
def test_a_patchcore_from_before_the_defaults_loads_and_scores_as_it_was_made(
    made_with, missing, legacy, sample_root, tmp_path
):
    """meta.json without ``whiten`` means none; with ``whiten`` but no ``whiten_mode``, whitened always."""
    defaults = {p.name: p.default for p in get_spec("patchcore").all_params()}
    assert (defaults["whiten"], defaults["whiten_mode"]) == (0.1, "auto")
    run = train("patchcore", "Sample_brick", sample_root, tmp_path, progress=False, image_size=96, **made_with)
    assert ("whitening" in np.load(run / "pytorch" / "memory_bank.npz")) == (legacy["whiten"] > 0)
    data = resolve_category(sample_root, "Sample_brick")
    images = [read_image(s.path) for s in data.test[:4]]
    before = open_scorer(run, "torch")(images).raw_score
    meta_path = run / "pytorch" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in missing:
        del meta[key]
    meta_path.write_text(json.dumps(meta))
    hparams = load_bundle(run).model.hparams
    assert {k: hparams[k] for k in legacy} == legacy  # and a retrain from it rebuilds the same kind of bank
    np.testing.assert_allclose(open_scorer(run, "torch")(images).raw_score, before, rtol=1e-6)
