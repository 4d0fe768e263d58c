"""Where training, testing and tuning run: ``--device auto|cpu|cuda|cuda:N`` and mixed precision.

``auto`` (the default) is the first CUDA device when PyTorch sees one, otherwise the CPU, so a user
with an NVIDIA GPU trains on it without asking. ``cuda`` without a usable GPU is an error that says
what is missing (no GPU visible, a CPU-only torch, or a driver older than the torch build needs),
raised before anything is written. meta.json records the device and precision a run used.

Mixed precision (``precision="amp"``, the default on CUDA) runs the forward passes under
``torch.autocast``: bf16 where the GPU supports it (no loss scaling needed), else fp16 with a
``GradScaler``. Statistics that need the range (PaDiM's covariance, PatchCore's distances) stay in
fp32/fp64. On the CPU everything stays fp32, exactly as before.

Only this module's functions import torch, and only when called.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ad_core.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "amp")
# CUDA major version of the torch build -> the oldest Linux driver that runs it (NVIDIA's release notes)
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


@dataclass(frozen=True)
class Device:
    """A resolved device: ``name`` (``"cpu"`` / ``"cuda:0"``), its precision and what it is."""

    name: str
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (the autocast dtype on CUDA)
    description: str = "CPU"

    @property
    def is_cuda(self) -> bool:
        """Whether this is a CUDA device."""
        return self.name.startswith("cuda")

    def torch(self):
        """The ``torch.device``."""
        import torch

        return torch.device(self.name)

    def autocast(self):
        """A context manager for the forward pass: autocast on CUDA with amp, nothing otherwise."""
        if not self.is_cuda or self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def grad_scaler(self):
        """A ``GradScaler`` for fp16 training (bf16 and fp32 need none): None when not needed."""
        if not self.is_cuda or self.precision != "fp16":
            return None
        import torch

        return torch.amp.GradScaler("cuda")

    def meta(self) -> dict[str, Any]:
        """What meta.json records."""
        return {"device": self.name, "device_name": self.description, "precision": self.precision}


CPU = Device("cpu")


def cuda_problem() -> str:
    """Why CUDA cannot be used here (empty when it can): the missing piece, in words."""
    import torch

    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch"
    if not torch.cuda.is_available():
        major = int(str(torch.version.cuda).split(".")[0])
        driver = MIN_DRIVER.get(major, "a recent one")
        return (
            f"no NVIDIA GPU is visible to PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}, which "
            f"needs NVIDIA driver {driver} or newer); check nvidia-smi, the container's GPU reservation, "
            f"and CUDA_VISIBLE_DEVICES"
        )
    return ""


def available() -> list[tuple[str, str]]:
    """``(value, label)`` pairs for a device selector: ``auto``, ``cpu`` and each visible CUDA device."""
    import torch

    out = [("auto", f"auto ({resolve('auto').name})"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i}", f"cuda:{i} ({torch.cuda.get_device_name(i)})"))
    return out


def resolve(device: str | Device | None = "auto", precision: str = "auto") -> Device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a :class:`Device`; a clear error when CUDA is asked for and absent.

    ``precision``: ``auto`` (amp on CUDA, fp32 on the CPU), ``fp32`` or ``amp``.
    """
    if isinstance(device, Device):
        return device
    name = (device or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N (N the GPU's index)")
    if name == "cpu":
        if precision == "amp":
            raise ConfigError("precision amp is for CUDA devices; the CPU trains in fp32")
        return CPU
    import torch

    problem = cuda_problem()
    if name == "auto":
        if problem:
            return CPU
        name = "cuda:0"
    if problem:
        raise ConfigError(f"--device {device}: {problem}; or use --device cpu (or auto, which falls back to it)")
    index = 0 if name == "cuda" else int(name[5:])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    mixed = precision in ("auto", "amp")
    dtype = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if mixed else "fp32"
    return Device(f"cuda:{index}", dtype, torch.cuda.get_device_name(index))
