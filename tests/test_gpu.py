"""TensorRT and FAISS-GPU paths; they run on a machine with an NVIDIA GPU and are skipped (with the reason) elsewhere.

On the GPU machine: ``pip install -e '.[dev]' tensorrt faiss-gpu-cu12`` (or JetPack's TensorRT),
then ``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_core import list_models
from ad_core.convert import convtrt, tensorrt_available
from ad_core.data.images import read_image
from ad_core.data.layout import resolve_category
from ad_core.models.patchcore.head import PatchcoreHead
from ad_core.runtime import open_scorer

pytestmark = pytest.mark.gpu

# FP16 engines round activations to 11 significant bits; raw scores agree with FP32 ONNX to ~1 %.
FP16_RTOL = 3e-2
FP32_RTOL = 1e-3


@pytest.fixture(scope="module")
def images(sample_root):
    data = resolve_category(sample_root, "Sample_brick")
    return [read_image(s.path) for s in data.test]


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("model", list_models())
def test_tensorrt_engine_matches_onnx(model, fp16, trained, images, tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"TensorRT path not exercised: {why}")
    bundle = trained(model) / "pytorch"
    result = convtrt(model, bundle / "model.pth", bundle / "meta.json", tmp_path / "engine", fp16=fp16)
    assert result.plan is not None and result.plan.is_file()
    onnx_out = open_scorer(result.onnx)(images)
    trt_scorer = open_scorer(result.plan)
    assert trt_scorer.backend == "tensorrt"
    trt_out = trt_scorer(images)
    rtol = FP16_RTOL if fp16 else FP32_RTOL
    np.testing.assert_allclose(trt_out.raw_score, onnx_out.raw_score, rtol=rtol)
    # decisions may differ only for images whose score sits within the tolerance of the threshold
    near = np.abs(onnx_out.score - trt_scorer.image_threshold) < 0.05
    assert (trt_out.is_anomaly == onnx_out.is_anomaly)[~near].all()


def test_faiss_gpu_index_matches_cpu(trained, images):
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("FAISS-GPU path not exercised: faiss has no GPU build or sees no GPU here")
    scorer = open_scorer(trained("patchcore"))
    assert scorer.search.on_gpu
    bank = scorer.search.bank
    cpu = PatchcoreHead.__new__(PatchcoreHead)
    cpu.__dict__.update(scorer.search.__dict__)
    cpu.index = faiss.IndexFlatL2(bank.shape[1])
    cpu.index.add(bank)
    batch = torch.stack([scorer.preprocess(im) for im in images])
    embedding = scorer.runner(batch.numpy())[0]
    gpu_score, gpu_map = scorer.search([embedding], scorer.image_size)
    cpu_score, cpu_map = cpu([embedding], scorer.image_size)
    np.testing.assert_allclose(gpu_score, cpu_score, rtol=1e-4)
    np.testing.assert_allclose(gpu_map, cpu_map, rtol=1e-4, atol=1e-4)
    # and the CPU default, the pruned exact search, agrees with both
    cells_score, cells_map = PatchcoreHead(bank, scorer.search.num_neighbors, engine="cells")(
        [embedding], scorer.image_size
    )
    np.testing.assert_allclose(cells_score, gpu_score, rtol=1e-4)
    np.testing.assert_allclose(cells_map, gpu_map, rtol=1e-4, atol=1e-4)
