"""Graph runners: a preprocessed batch (numpy float32) in, the graph's outputs (numpy) out.

One class per backend; :mod:`ad_core.runtime` picks one and puts the model's head after it. Each
imports its engine (onnxruntime, openvino, tensorrt, torch) only when it is built, so the deployed
path loads only what it runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ad_core.errors import BundleError
from ad_core.graph_io import EMBEDDING_OUTPUT, SCORE_OUTPUTS, onnx_metadata

if TYPE_CHECKING:
    import torch

    from ad_core.models.base import AnomalyModel


class OrtRunner:
    """ONNX Runtime session; CUDA provider first when installed.

    ``spinning``: whether idle worker threads busy-wait for the next operator. It makes a full scoring
    graph 15-22 % faster on a 2-core CPU (bench/bench_latency.py), but a graph followed by a FAISS
    search (PatchCore) must not spin: the spinning threads fight FAISS for the same cores.
    """

    backend = "onnxruntime"

    def __init__(self, model: bytes, spinning: bool = False, device: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(
            model, options, providers=ort_providers(device, ort.get_available_providers())
        )
        self.input_name = self.session.get_inputs()[0].name  # "image"; "queries" for PatchCore's search graph
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        width = onnx_metadata(model).get("embedding_dim") if EMBEDDING_OUTPUT in self.output_shapes else None
        if width:  # the exporter may leave the channel dimension symbolic; the metadata has it
            self.output_shapes[EMBEDDING_OUTPUT][1] = int(width)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph."""
        return self.session.run(None, {self.input_name: batch})


def ort_providers(device: str | None, available: list[str]) -> list:
    """ONNX Runtime's providers for ``device``: ``cpu``; ``cuda[:N]`` (refused without onnxruntime-gpu); ``auto``."""
    name = (device or "auto").lower()
    cuda = "CUDAExecutionProvider" in available
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if name.startswith("cuda"):
        if not cuda:
            raise BundleError(
                f"--device {device}: this ONNX Runtime has no CUDA provider (install onnxruntime-gpu, "
                f"`pip install 'ad-inspect[gpu]'`), or use --device cpu"
            )
        index = int(name[5:]) if name.startswith("cuda:") else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OpenVinoRunner:
    """The ONNX graph compiled by OpenVINO for the CPU, tuned for single-image latency."""

    backend = "openvino"

    def __init__(self, model: bytes, source: str | Path, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BundleError(
                f"{source}: the openvino backend needs the openvino package (pip install openvino); "
                f"or use the default onnxruntime backend"
            ) from exc
        core = ov.Core()
        graph = core.read_model(model=model, weights=b"")
        # f32 by default: OpenVINO would otherwise run bf16 on CPUs that have it and scores would
        # drift by ~1 %; precision="bf16" asks for exactly that speed-up (f32 where the CPU lacks bf16)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self.compiled = core.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()
        known = {EMBEDDING_OUTPUT, *SCORE_OUTPUTS}  # a tensor has several names in OpenVINO; keep the graph's
        self.output_names = [next(iter(o.get_names() & known), o.get_any_name()) for o in self.compiled.outputs]
        shapes = {n: o.get_partial_shape() for n, o in zip(self.output_names, self.compiled.outputs, strict=True)}
        self.output_shapes = {n: [d.get_length() if d.is_static else None for d in s] for n, s in shapes.items()}
        width = onnx_metadata(model).get("embedding_dim") if EMBEDDING_OUTPUT in self.output_shapes else None
        if width:
            self.output_shapes[EMBEDDING_OUTPUT][1] = int(width)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph."""
        result = self.request.infer({"image": batch})
        return [np.asarray(result[o]) for o in self.compiled.outputs]


@contextlib.contextmanager
def ieee_fp32():
    """Convolutions and matrix products in full fp32 on CUDA: no TF32, which PyTorch allows cuDNN by default.

    TF32 keeps 10 bits of mantissa: a run tested on an H200 scored 4e-4 away from the same images on
    the CPU, enough to move a normalised score past its 1e-5 tolerance in ``predictions.csv``. The
    switches are process-wide; they are restored on the way out.
    """
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TorchRunner:
    """The export graph run eagerly in PyTorch (training, testing, tuning, and ``--backend torch``).

    It holds the model's live module, so a model scored mid-training scores with its current weights,
    on the model's device (``AnomalyModel.to``), always in IEEE fp32 (no TF32 on a GPU): the scores
    that calibrate a threshold on a GPU are the ones the CPU's engines give.
    """

    backend = "torch"

    def __init__(self, model: AnomalyModel) -> None:
        self.model = model
        self.graph = model.scoring_graph()
        self.on = model.device
        self.output_names = model.spec.outputs
        width = getattr(self.graph, "embedding_dim", None)
        self.output_shapes = {EMBEDDING_OUTPUT: ["batch", width, None, None]} if width else {}
        self.keep_on_device = False  # True: hand the outputs on as float32 tensors where they are (a head on the GPU)

    def __call__(self, batch: np.ndarray | torch.Tensor) -> list[np.ndarray] | list[torch.Tensor]:
        """Run the graph: numpy outputs on the host, or the device's tensors with ``keep_on_device``."""
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        if self.on != self.model.device:  # the model moved since (an export traces it on the CPU)
            self.graph.to(self.model.device.torch())
            self.on = self.model.device
        with torch.no_grad(), ieee_fp32():
            out = self.graph(self.model.on_device(x))
        outs = [o.float() for o in (out if isinstance(out, tuple) else (out,))]
        return outs if self.keep_on_device else [o.cpu().numpy() for o in outs]


class TrtRunner:  # pragma: no cover - needs TensorRT and an NVIDIA GPU (tests/test_gpu.py on the device)
    """A deserialised TensorRT engine; buffers and stream from cuda-python or pycuda (:mod:`ad_core.cuda_mem`).

    No torch: a Jetson runs a ``.plan`` with TensorRT, a CUDA binding and numpy. Device buffers are
    kept between calls and grown only when a batch needs more.
    """

    backend = "tensorrt"

    def __init__(self, plan: bytes, path: Path, input_name: str = "image") -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BundleError(
                f"{path}: TensorRT is not installed here; run the .onnx with --backend onnxruntime, or install "
                f"TensorRT (JetPack ships it; on a PC: pip install 'ad-inspect[gpu]')"
            ) from exc
        from ad_core.cuda_mem import open_cuda

        self.trt = trt
        self.cuda = open_cuda(path)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with self.cuda.scope():
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise BundleError(
                    f"{path}: not an engine this TensorRT ({trt.__version__}) and GPU can load; engines are tied "
                    f"to the TensorRT version and GPU they were built on: rebuild it with `ad-core convtrt` here"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        if [n for n in names if is_input[n]] != [input_name]:
            raise BundleError(
                f"{path}: engine inputs are {[n for n in names if is_input[n]]}, expected [{input_name!r}]"
            )
        self.input_name = input_name
        self.output_names = [n for n in names if not is_input[n]]
        self.output_shapes = {n: list(self.engine.get_tensor_shape(n)) for n in self.output_names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device address, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.alloc(nbytes), nbytes
            self._buffers[name] = (ptr, size)
        return ptr

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Copy in, execute, copy out, on one stream."""
        batch = np.ascontiguousarray(batch, np.float32)
        with self.cuda.scope():
            self.context.set_input_shape(self.input_name, tuple(batch.shape))
            inp = self._buffer(self.input_name, batch.nbytes)
            self.cuda.copy_in(inp, batch)
            self.context.set_tensor_address(self.input_name, inp)
            outs = []
            for name in self.output_names:
                dtype = np.float16 if self.engine.get_tensor_dtype(name) == self.trt.float16 else np.float32
                host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype)
                ptr = self._buffer(name, host.nbytes)
                self.context.set_tensor_address(name, ptr)
                outs.append((host, ptr))
            if not self.context.execute_async_v3(self.cuda.stream_handle):
                raise BundleError("TensorRT execution failed")
            for host, ptr in outs:
                self.cuda.copy_out(host, ptr)
            self.cuda.sync()
        return [host.astype(np.float32) for host, _ in outs]

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            with contextlib.suppress(Exception):
                self.cuda.free(ptr)
