"""Every GPU path; each test runs on a machine with an NVIDIA GPU and is skipped (with what it checks) elsewhere.

* training on CUDA (mixed precision) scores within 0.01 image AUROC of the same training on the CPU
  (0.05 for the two models that train networks);
* the torch scorer on CUDA (``--backend torch --device cuda``) gives ONNX Runtime's CPU scores, with
  PatchCore's bank searched on the GPU;
* PaDiM's statistics and PatchCore's bank fitted on CUDA are the CPU's;
* TensorRT fp32 engines match ONNX Runtime to 1e-3, fp16 ones to 1e-2 (PatchCore's bank searched by
  its ``search.plan`` on the GPU);
* FAISS's GPU index returns the CPU search's neighbours;
* a ``.plan`` is opened and scored in a fresh process that never imports torch.

On the GPU machine: ``pip install -e '.[dev,gpu]'`` (or JetPack's TensorRT), then ``pytest tests/test_gpu.py``;
``bench/bench_gpu.py`` times the same paths.
"""

from __future__ import annotations

import json
import subprocess
import sys

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

FP16_RTOL = 1e-2  # fp16 engines round activations to 11 significant bits
FP32_RTOL = 1e-3
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA,
    reason="CUDA paths not exercised: PyTorch sees no GPU (checks: training and the torch scorer on CUDA against the CPU)",
)


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
    result = convtrt(model, None, trained(model), tmp_path / "engine", fp16=fp16)
    assert result.plan is not None and result.plan.is_file()
    onnx_out = open_scorer(result.onnx)(images)
    trt_scorer = open_scorer(result.plan)
    assert trt_scorer.backend == "tensorrt"
    if model == "patchcore":  # the bank searched by search.plan (fp32 whatever the model engine's precision)
        assert trt_scorer.search.engine == "engine-tensorrt" and (result.onnx.parent / "search.plan").is_file()
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
    cells_score, cells_map = PatchcoreHead(
        bank, scorer.search.num_neighbors, engine="cells", whitening=scorer.search.whitening
    )([embedding], scorer.image_size)
    np.testing.assert_allclose(cells_score, gpu_score, rtol=1e-4)
    np.testing.assert_allclose(cells_map, gpu_map, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("model", list_models())
def test_training_on_cuda_scores_like_training_on_the_cpu(model, sample_root, tmp_path):
    """PatchCore and PaDiM fit frozen features: CUDA's mixed precision may move AUROC by 0.01 at most.

    EfficientAD and the VAE train networks, and CUDA's kernels and bf16 take another path from the
    same seed (on an H200: 0.016 and 0.026 from the CPU, 3 and 5 of the 192 normal-defect pairs), so
    theirs is 0.05.
    """
    from conftest import CATEGORY, TEST_SETTINGS

    from ad_core import evaluate, train

    aurocs = {}
    for device in ("cpu", "cuda"):
        run = train(
            model, CATEGORY, sample_root, tmp_path / device, progress=False, device=device, **TEST_SETTINGS[model]
        )
        meta = json.loads((run / "pytorch" / "meta.json").read_text())
        assert meta["device"].startswith(device) and (meta["precision"] != "fp32") == (device == "cuda")
        aurocs[device] = evaluate(run, progress=False, save_images=False, device=device)["image_auroc"]
    tolerance = 0.01 if model in ("patchcore", "padim") else 0.05
    assert abs(aurocs["cuda"] - aurocs["cpu"]) <= tolerance, aurocs


@needs_cuda
@pytest.mark.parametrize("model", list_models())
def test_torch_scorer_on_cuda_matches_onnxruntime_on_the_cpu(model, trained, images):
    """A bundle scored by ``--backend torch --device cuda`` gives the CPU engine's scores and maps.

    Both run IEEE fp32: the torch runner turns off the TF32 that PyTorch allows cuDNN by default (with
    it, EfficientAD's scores were 9e-3 away on an H200).
    """
    cpu_out = open_scorer(trained(model), device="cpu")(images)
    gpu = open_scorer(trained(model), backend="torch", device="cuda")
    assert gpu.backend == "torch" and next(gpu.bundle.model.module.parameters()).is_cuda
    if model == "patchcore":  # the bank is searched on the GPU, beside the graph
        assert gpu.search.engine == "torch-cuda" and gpu.search.on_gpu
    gpu_out = gpu(images)
    worst = np.max(np.abs(gpu_out.raw_score - cpu_out.raw_score) / np.abs(cpu_out.raw_score))
    print(f"{model}: torch on CUDA against ONNX Runtime on the CPU, worst relative score difference {worst:.2e}")
    np.testing.assert_allclose(gpu_out.raw_score, cpu_out.raw_score, rtol=FP32_RTOL)
    scale = np.abs(cpu_out.raw_map).max()
    np.testing.assert_allclose(gpu_out.raw_map, cpu_out.raw_map, rtol=FP32_RTOL, atol=FP32_RTOL * scale)
    assert (gpu_out.is_anomaly == cpu_out.is_anomaly).mean() >= 0.95


@needs_cuda
@pytest.mark.parametrize("model", ["patchcore", "padim"])
def test_overlapping_tiles_score_on_cuda_as_on_the_cpu(model, mosaics, tmp_path):
    """A model on 3x3 overlapping tiles (2x2 grid, overlap 0.5): the torch scorer on CUDA (PatchCore: the
    nine tiles' embeddings searched, re-weighted and blurred on the GPU) gives ONNX Runtime's CPU scores and
    the grid-sized maps averaged where the tiles meet."""
    from ad_core.train import train

    run = train(
        model, "Mosaic", mosaics, tmp_path / "models", image_size=64, tiles="2x2", tile_overlap=0.5,
        progress=False, device="cpu",
    )  # fmt: skip
    frames = [read_image(s.path) for s in resolve_category(mosaics, "Mosaic", require_test=True).test]
    cpu_out = open_scorer(run, device="cpu")(frames)
    gpu = open_scorer(run, backend="torch", device="cuda")
    assert gpu.preprocess.n_tiles == 9
    if model == "patchcore":
        assert gpu.search.engine == "torch-cuda" and gpu.runner.keep_on_device
    gpu_out = gpu(frames)
    assert gpu_out.raw_map.shape == cpu_out.raw_map.shape == (len(frames), 128, 128)
    worst = np.max(np.abs(gpu_out.raw_score - cpu_out.raw_score) / np.abs(cpu_out.raw_score))
    print(f"{model} on 3x3 overlapping tiles: torch on CUDA against ONNX Runtime on the CPU, worst {worst:.2e}")
    np.testing.assert_allclose(gpu_out.raw_score, cpu_out.raw_score, rtol=FP32_RTOL)
    scale = np.abs(cpu_out.raw_map).max()
    np.testing.assert_allclose(gpu_out.raw_map, cpu_out.raw_map, rtol=FP32_RTOL, atol=FP32_RTOL * scale)


@needs_cuda
def test_fits_on_cuda_build_the_cpus_statistics_and_bank(sample_root):
    """PaDiM's Gaussian (now inverted on the GPU) and PatchCore's bank from a fit on CUDA equal the CPU's.

    Both fits extract features in IEEE fp32, so the two differ by float rounding only.
    """
    from ad_core import create_model
    from ad_core.models.base import FitConfig

    train = resolve_category(sample_root, "Sample_brick").train[:16]
    cfg = FitConfig(batch_size=8, progress=False)
    fitted = {}
    for name in ("padim", "patchcore"):
        for device in ("cpu", "cuda"):
            model = create_model(name, image_size=128).to(device)
            model.prepare_pretrained(cfg)
            model.fit(train, [], cfg)
            fitted[name, device] = model.artifacts()
    cpu, gpu = fitted["padim", "cpu"], fitted["padim", "cuda"]
    np.testing.assert_allclose(gpu["mean"], cpu["mean"], rtol=1e-4, atol=1e-5 * np.abs(cpu["mean"]).max())
    np.testing.assert_allclose(
        gpu["covariance"], cpu["covariance"], rtol=0, atol=1e-4 * np.abs(cpu["covariance"]).max()
    )
    inv_scale = np.abs(cpu["inv_covariance"]).max()  # an inverse amplifies rounding by the condition number
    np.testing.assert_allclose(gpu["inv_covariance"], cpu["inv_covariance"], rtol=0, atol=1e-3 * inv_scale)
    cpu_bank, gpu_bank = fitted["patchcore", "cpu"]["memory_bank"], fitted["patchcore", "cuda"]["memory_bank"]
    assert cpu_bank.shape == gpu_bank.shape
    nearest = ((gpu_bank[:, None, :] - cpu_bank[None]) ** 2).sum(-1).min(1) ** 0.5
    same = nearest <= 1e-3 * np.linalg.norm(gpu_bank, axis=1)
    print(f"PatchCore bank on CUDA: {same.mean():.1%} of its rows are rows of the CPU's bank")
    assert same.mean() >= 0.98  # the greedy may take the other of two near-equal points


def test_faiss_gpu_returns_the_cpu_neighbours(trained):
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip(
            "FAISS-GPU path not exercised: faiss has no GPU build or sees no GPU here (checks: same neighbours)"
        )
    from ad_core.models.patchcore.knn import CellIndex

    bank = np.load(trained("patchcore") / "pytorch" / "memory_bank.npz")["memory_bank"]
    queries = bank[::7] + np.random.default_rng(0).normal(0, 0.05, bank[::7].shape).astype(np.float32)
    gpu = PatchcoreHead(bank, engine="faiss")
    assert gpu.on_gpu
    _, gpu_idx = gpu.index.search(queries, 3)
    _, cpu_idx = CellIndex(bank).search(queries, 3)
    assert (gpu_idx[:, 0] == cpu_idx[:, 0]).mean() > 0.999  # ties at equal distance may swap


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_a_plan_is_scored_in_a_process_that_never_imports_torch(model, trained, sample_root, tmp_path):
    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f"torch-free TensorRT start not exercised: {why}")
    result = convtrt(model, None, trained(model), tmp_path / "engine")
    folder = sample_root / "test" / "Sample_brick" / "anomaly"
    code = (
        "import sys\n"
        "from ad_core.cli import main\n"
        f"rc = main(['infer', {model!r}, '-e', {str(result.plan)!r}, '-d', {str(folder)!r}, '--out', {str(tmp_path / 'r.csv')!r}])\n"
        "print('rc', rc, 'torch loaded:', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "rc 0 torch loaded: False" in out.stdout, out.stdout + out.stderr[-2000:]
