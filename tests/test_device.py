"""Device selection on the machine the tests run on (the GPU paths themselves: tests/test_gpu.py).

``auto`` resolves to the GPU when PyTorch sees one and to the CPU otherwise; asking for CUDA where
there is none fails before anything is written, naming what is missing; meta.json records the
device; the panels offer what the machine has.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ad_core.device import Device, available, cuda_problem, resolve
from ad_core.errors import ADCoreError, BundleError, ConfigError
from ad_core.runners import ort_providers

HAS_CUDA = torch.cuda.is_available()
no_gpu = pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU: tests/test_gpu.py checks the CUDA paths")


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    device = resolve("auto")
    if HAS_CUDA:
        assert device.is_cuda and device.name == "cuda:0" and device.precision in ("bf16", "fp16")
        assert resolve("auto", "fp32").precision == "fp32"
    else:
        assert device == Device("cpu") and device.precision == "fp32" and cuda_problem()
    assert resolve("cpu").meta() == {"device": "cpu", "device_name": "CPU", "precision": "fp32"}
    assert [value for value, _ in available()][:2] == ["auto", "cpu"]


def test_bad_device_and_precision_values_name_the_choices():
    with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
        resolve("gpu")
    with pytest.raises(ConfigError, match="precision 'half'"):
        resolve("cpu", "half")
    with pytest.raises(ConfigError, match="amp is for CUDA devices"):
        resolve("cpu", "amp")
    with pytest.raises(ConfigError, match=r"CUDA device|no NVIDIA GPU is visible"):
        resolve(f"cuda:{torch.cuda.device_count() + 3}")


@no_gpu
def test_cuda_without_a_gpu_fails_before_anything_is_written(trained, sample_root, tmp_path, capsys):
    from ad_core import evaluate, train
    from ad_core.cli import main
    from ad_core.retrain import retrain

    with pytest.raises(ConfigError, match=r"--device cuda: no NVIDIA GPU is visible to PyTorch .*driver"):
        train("padim", "Sample_brick", sample_root, tmp_path / "models", device="cuda", image_size=64)
    assert not (tmp_path / "models").exists()
    run = trained("padim")
    before = (run / "pytorch" / "meta.json").read_bytes()
    with pytest.raises(ConfigError, match="--device cuda:0"):
        evaluate(run, device="cuda:0")
    with pytest.raises(ConfigError, match="--device cuda"):
        retrain("padim", None, run, "Sample_brick", sample_root, tmp_path / "retrained", device="cuda")
    assert not (tmp_path / "retrained").exists() and (run / "pytorch" / "meta.json").read_bytes() == before
    rc = main(["test", "--run", str(run), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "no NVIDIA GPU is visible" in err and "--device cpu" in err
    with pytest.raises(BundleError, match="no CUDA provider"):
        ort_providers("cuda", ["CPUExecutionProvider"])


def test_meta_json_records_the_device_a_run_used(trained):
    meta = json.loads((trained("padim") / "pytorch" / "meta.json").read_text())
    expected = resolve("auto")
    assert (meta["device"], meta["device_name"], meta["precision"]) == (
        expected.name,
        expected.description,
        expected.precision,
    )


def test_onnx_runtime_provider_follows_the_device():
    cpu_only = ["CPUExecutionProvider"]
    assert ort_providers("cpu", ["CUDAExecutionProvider", *cpu_only]) == cpu_only
    assert ort_providers(None, cpu_only) == cpu_only
    assert ort_providers("cuda:1", ["CUDAExecutionProvider", *cpu_only])[0] == (
        "CUDAExecutionProvider",
        {"device_id": 1},
    )


def test_panels_offer_the_devices_this_machine_has(sample_root, tmp_path):
    from jupyter_ext import ExportPanel, TrainPanel, TunePanel

    values = [value for value, _ in available()]
    for panel in (TrainPanel(sample_root, "Sample_brick", tmp_path), TunePanel(sample_root, "Sample_brick", tmp_path),
                  ExportPanel()):  # fmt: skip
        options = dict(panel.device.options)  # label -> value
        assert list(options.values()) == values and panel.device.value == "auto"
        assert any(label.startswith("auto (") for label in options)


def test_opening_a_plan_imports_no_torch(tmp_path):
    """The deployed path on a Jetson: a .plan is opened with TensorRT and cuda-python / pycuda, never torch."""
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"an engine")
    code = (
        "import sys\n"
        "from ad_core.runners import TrtRunner\n"
        "try:\n"
        f"    TrtRunner(b'an engine', {str(plan)!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "torch loaded: False" in out, out
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "TensorRT is not installed here" in out


def test_out_of_memory_names_the_flag_to_change():
    from ad_core.models.base import out_of_memory

    err = out_of_memory(
        RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), Device("cuda:0", "bf16", "GPU"), 16, "training"
    )
    assert isinstance(err, ADCoreError) and "--batch 8" in str(err) and "cuda:0" in str(err)
