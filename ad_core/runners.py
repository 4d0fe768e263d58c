"""Graph runners: a preprocessed batch (numpy float32) in, the graph's outputs (numpy) out.

One class per backend; :mod:`ad_core.runtime` picks one and puts the model's head after it. Each
imports its engine (onnxruntime, openvino, tensorrt, torch) only when it is built, so the deployed
path loads only what it runs.
"""

from __future__ import annotations

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

    def __init__(self, model: bytes, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {o.name: list(o.shape) for o in self.session.get_outputs()}
        width = onnx_metadata(model).get("embedding_dim") if EMBEDDING_OUTPUT in self.output_shapes else None
        if width:  # the exporter may leave the channel dimension symbolic; the metadata has it
            self.output_shapes[EMBEDDING_OUTPUT][1] = int(width)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph."""
        return self.session.run(None, {"image": batch})


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


class TorchRunner:
    """The export graph run eagerly in PyTorch (training, testing, tuning, and ``--backend torch``).

    It holds the model's live module, so a model scored mid-training scores with its current weights.
    """

    backend = "torch"

    def __init__(self, model: AnomalyModel) -> None:
        self.graph = model.scoring_graph()
        self.output_names = model.spec.outputs
        width = getattr(self.graph, "embedding_dim", None)
        self.output_shapes = {EMBEDDING_OUTPUT: ["batch", width, None, None]} if width else {}

    def __call__(self, batch: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Run the graph."""
        import torch

        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        with torch.no_grad():
            out = self.graph(x)
        return [o.float().numpy() for o in (out if isinstance(out, tuple) else (out,))]


class TrtRunner:  # pragma: no cover - needs TensorRT and an NVIDIA GPU (tests/test_gpu.py on the device)
    """A deserialised TensorRT engine; inputs and outputs live in CUDA memory owned by torch."""

    backend = "tensorrt"

    def __init__(self, plan: bytes, path: Path) -> None:
        import torch

        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BundleError(
                f"{path}: TensorRT is not installed here; run the .onnx with --backend onnxruntime, or install "
                f"TensorRT (JetPack ships it)"
            ) from exc
        if not torch.cuda.is_available():
            raise BundleError(f"{path}: a TensorRT engine needs an NVIDIA GPU and a CUDA build of torch")
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError(
                f"{path}: not an engine this TensorRT ({trt.__version__}) and GPU can load; engines are tied to "
                f"the TensorRT version and GPU they were built on: rebuild it with `ad-core convtrt` here"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        if [n for n in names if is_input[n]] != ["image"]:
            raise BundleError(f"{path}: engine inputs are {[n for n in names if is_input[n]]}, expected ['image']")
        self.output_names = [n for n in names if not is_input[n]]
        self.output_shapes = {n: list(self.engine.get_tensor_shape(n)) for n in self.output_names}
        self.stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Copy in, execute, copy out."""
        import torch

        with torch.cuda.stream(self.stream):
            x = torch.from_numpy(batch).cuda(non_blocking=True)
            self.context.set_input_shape("image", tuple(x.shape))
            self.context.set_tensor_address("image", x.data_ptr())
            outs = []
            for name in self.output_names:
                dtype = torch.float16 if self.engine.get_tensor_dtype(name) == self.trt.float16 else torch.float32
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BundleError("TensorRT execution failed")
            result = [o.float().cpu() for o in outs]
        self.stream.synchronize()
        return [r.numpy() for r in result]
