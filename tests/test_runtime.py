"""One runtime: ONNX Runtime and torch backends agree with the trained model; foreign graphs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import module_forward

from ad_core import list_models, load_bundle
from ad_core.data.images import read_image
from ad_core.data.layout import resolve_category
from ad_core.errors import BundleError
from ad_core.export import export_onnx, onnx_metadata
from ad_core.runtime import open_scorer
from ad_core.scoring import denormalize

# Tolerance: ONNX Runtime and PyTorch use different kernels; on these models raw scores agree to
# about 1e-6 relative. We require 1e-4 relative and identical decisions, except for an image whose
# score is within that tolerance of the threshold: the F1 threshold is itself a test image's score,
# so that image sits exactly on the boundary and either side is correct within float rounding.
RTOL = 1e-4


@pytest.fixture(scope="module")
def images(sample_root):
    data = resolve_category(sample_root, "Sample_brick")
    picks = [s for s in data.test if s.label == 0][:3] + [s for s in data.test if s.label == 1][:5]
    return [read_image(s.path) for s in picks]


@pytest.mark.parametrize("model", list_models())
def test_onnxruntime_matches_torch_model(model, evaluated, images, tmp_path):
    run, _ = evaluated(model)
    bundle = load_bundle(run)
    path = export_onnx(bundle, tmp_path / "model.onnx")
    meta = onnx_metadata(path)
    assert meta["model"] == model and meta["image_size"] == str(bundle.meta["image_size"])
    assert meta["graph"] == ("embedding" if model == "patchcore" else "score")

    # the reference: the anomalib / VAE module's own forward, not our graph and head
    reference = module_forward(bundle, torch.stack([bundle.preprocess(im) for im in images]))
    ref_raw = reference.pred_score.reshape(-1).numpy()
    ref_norm = bundle.normalize(ref_raw)
    m = bundle.meta
    raw_thr = denormalize(bundle.image_threshold, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"])
    clear = np.abs(ref_raw - raw_thr) > 2 * RTOL * np.abs(ref_raw)
    assert clear.sum() >= len(images) - 1
    for backend, kwargs in (("onnxruntime", {"onnx_path": path}), ("openvino", {}), ("torch", {})):
        scorer = open_scorer(bundle, backend, **kwargs)
        out = scorer(images)
        np.testing.assert_allclose(out.raw_score, ref_raw, rtol=RTOL)
        np.testing.assert_array_equal(out.is_anomaly[clear], (ref_norm >= bundle.image_threshold)[clear])
        ref_map = reference.anomaly_map[:, 0].numpy()
        np.testing.assert_allclose(out.raw_map, ref_map, atol=RTOL * np.abs(ref_map).max())
        assert out.anomaly_map.shape == (len(images), bundle.meta["image_size"], bundle.meta["image_size"])
        assert ((out.score >= 0) & (out.score <= 1)).all()
        if backend == "onnxruntime":  # busy-waiting threads only where no FAISS search follows the graph
            options = scorer.runner.session.get_session_options()
            spin = options.get_session_config_entry("session.intra_op.allow_spinning")
            assert spin == ("0" if model == "patchcore" else "1")
            quiet = open_scorer(bundle, backend, spinning=False, **kwargs)  # as the ROS node opens it
            options = quiet.runner.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            np.testing.assert_allclose(quiet(images).raw_score, out.raw_score, rtol=1e-6)


def test_graph_of_another_model_or_size_is_refused(trained, tmp_path):
    padim = load_bundle(trained("padim"))
    patchcore = load_bundle(trained("patchcore"))
    foreign = export_onnx(patchcore, tmp_path / "patchcore.onnx")
    with pytest.raises(
        BundleError, match="exported for model patchcore at image size 128; this bundle describes padim"
    ):
        open_scorer(padim, "onnxruntime", onnx_path=foreign)
    scorer = open_scorer(padim, "torch")
    with pytest.raises(BundleError, match="this model takes 128 px"):
        scorer.raw(torch.zeros(1, 3, 64, 64))
    with pytest.raises(BundleError, match="backend 'tensorflow' is not available"):
        open_scorer(padim, "tensorflow")


def test_torch_scorer_runs_ieee_fp32_and_restores_the_switches(trained, images):
    """The torch scorer turns off TF32 while it runs (on a GPU it moved scores by up to 9e-3) and puts the
    process's switches back afterwards. The switches can be read on the CPU too, where TF32 does nothing.
    """
    scorer = open_scorer(trained("padim"), backend="torch", device="cpu")
    seen = []
    hook = scorer.runner.graph.register_forward_pre_hook(
        lambda *_: seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
    )
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        scorer(images[:2])
        after = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:
        hook.remove()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen == [(False, False)]
    assert after == (True, True)
