"""CUDA buffers and streams for the TensorRT runner, without torch.

A Jetson that runs a ``.plan`` needs TensorRT and a way to move a batch to the GPU and the scores
back; it does not need PyTorch (importing it costs seconds and hundreds of MB). Two bindings are
supported, tried in this order:

* ``cuda-python`` (``cuda.bindings.runtime``, or ``cuda.cudart`` in releases before 12.6): NVIDIA's
  official bindings of the CUDA runtime; the runtime API uses the device's primary context, so any
  thread (the ROS node's camera thread) may call it.
* ``pycuda``: the design card's choice, common on JetPack images. Its context is pushed around each
  call, so it too works from any thread.

``open_cuda(where)`` returns a :class:`CudaApi` or raises :class:`ad_core.errors.BundleError`
naming what is missing. Nothing here runs on a machine without an NVIDIA GPU (tests/test_gpu.py
runs it on one).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import BundleError


class CudaApi:
    """What the TensorRT runner needs: allocate, copy in and out on a stream, synchronise, free."""

    name = ""

    def alloc(self, nbytes: int) -> int:  # pragma: no cover - GPU only
        """A device buffer of ``nbytes``; its address."""
        raise NotImplementedError

    def free(self, ptr: int) -> None:  # pragma: no cover - GPU only
        """Release a buffer from :meth:`alloc`."""
        raise NotImplementedError

    def copy_in(self, ptr: int, host: np.ndarray) -> None:  # pragma: no cover - GPU only
        """Host -> device on the stream (``host`` must stay alive until :meth:`sync`)."""
        raise NotImplementedError

    def copy_out(self, host: np.ndarray, ptr: int) -> None:  # pragma: no cover - GPU only
        """Device -> host on the stream."""
        raise NotImplementedError

    def sync(self) -> None:  # pragma: no cover - GPU only
        """Wait for the stream."""
        raise NotImplementedError

    @property
    def stream_handle(self) -> int:  # pragma: no cover - GPU only
        """The stream as TensorRT's ``execute_async_v3`` takes it."""
        raise NotImplementedError

    def scope(self):
        """A context to run CUDA calls in (pycuda pushes its context; the runtime API needs none)."""
        return contextlib.nullcontext()


class _CudaPython(CudaApi):  # pragma: no cover - GPU only
    name = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count == 0:
            raise RuntimeError(f"no CUDA device ({err})")
        self._check(cudart.cudaSetDevice(0))
        self._stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BundleError(f"CUDA runtime error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(int(nbytes))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._stream))

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._stream))

    def sync(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._stream))

    @property
    def stream_handle(self) -> int:
        return int(self._stream)


class _PyCuda(CudaApi):  # pragma: no cover - GPU only
    name = "pycuda"

    def __init__(self, driver: Any) -> None:
        self.drv = driver
        driver.init()
        if driver.Device.count() == 0:
            raise RuntimeError("no CUDA device")
        self._ctx = driver.Device(0).retain_primary_context()
        with self.scope():
            self._stream = driver.Stream()
        self._allocs: dict[int, Any] = {}

    @contextlib.contextmanager
    def scope(self):
        self._ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def alloc(self, nbytes: int) -> int:
        mem = self.drv.mem_alloc(int(nbytes))
        self._allocs[int(mem)] = mem
        return int(mem)

    def free(self, ptr: int) -> None:
        mem = self._allocs.pop(ptr, None)
        if mem is not None:
            mem.free()

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        self.drv.memcpy_htod_async(ptr, host, self._stream)

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        self.drv.memcpy_dtoh_async(host, ptr, self._stream)

    def sync(self) -> None:
        self._stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6

        return runtime
    except ImportError:
        from cuda import cudart  # older cuda-python

        return cudart


def open_cuda(where: str | Path) -> CudaApi:
    """The first CUDA binding that finds a GPU; a :class:`BundleError` naming what is missing otherwise."""
    problems = []
    for name, load, make in (("cuda-python", _cudart, _CudaPython), ("pycuda", _pycuda_driver, _PyCuda)):
        try:
            module = load()
        except ImportError:
            problems.append(f"{name} is not installed")
            continue
        try:
            return make(module)
        except Exception as exc:
            problems.append(f"{name}: {exc}")
    raise BundleError(
        f"{where}: a TensorRT engine needs an NVIDIA GPU and CUDA bindings ({'; '.join(problems)}); "
        f"install cuda-python or pycuda (`pip install 'ad-inspect[gpu]'`; JetPack images ship pycuda), "
        f"or run the .onnx with --backend onnxruntime"
    )


def _pycuda_driver():
    import pycuda.driver

    return pycuda.driver


def gpu_count() -> int:
    """How many CUDA devices the installed bindings see (0 without bindings or a GPU); imports no torch."""
    with contextlib.suppress(Exception):
        rt = _cudart()
        err, count = rt.cudaGetDeviceCount()
        return int(count) if err == rt.cudaError_t.cudaSuccess else 0
    with contextlib.suppress(Exception):
        drv = _pycuda_driver()
        drv.init()
        return int(drv.Device.count())
    return 0
