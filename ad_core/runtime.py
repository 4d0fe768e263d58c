"""One runtime for PC and Jetson: open a model from any of its forms, score a batch with a chosen backend.

``open_scorer(source, backend)`` returns a :class:`Scorer`; calling it on RGB images (or an already
preprocessed batch) gives a :class:`ScoreBatch`: raw score, normalised score, decision and anomaly
map. ``source`` is a trained bundle (run directory, ``pytorch/`` folder, meta.json), an exported
``model.onnx``, a TensorRT ``model.plan`` or a ``model.pth``. Backends run the graph of
:mod:`ad_core.export`:

* ``"onnxruntime"`` (default): ONNX Runtime on CPU (CUDA provider when present);
* ``"openvino"``: the same ONNX graph compiled by OpenVINO for Intel/AMD x86 CPUs (optional
  ``openvino`` package; about twice as fast as ONNX Runtime for EfficientAD on a PC CPU);
* ``"tensorrt"``: a serialised TensorRT engine on an NVIDIA GPU (Jetson or PC);
* ``"torch"``: the same graph in PyTorch.

Everything a graph needs besides its weights comes from meta.json (preprocessing, normalisation,
threshold): the one next to the file, or ``meta_json``, or (ONNX only) the copy embedded in the
graph at export. PatchCore's graph ends at the patch embeddings; the exact nearest-neighbour
search over ``memory_bank.npz`` runs in FAISS's GPU index where a GPU build of FAISS sees a GPU, and
on the CPU in :class:`ad_core.knn.CellIndex` (pruned with the triangle inequality, the same
neighbours as a brute-force search; FAISS's ``IndexFlatL2`` on request). The image score and map
follow anomalib's formulas, with the 33x33 Gaussian blur done as two separable passes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.bundle import Bundle, bundle_dir, check_meta_numbers, load_bundle, normalize_with, read_meta
from ad_core.errors import BundleError
from ad_core.fileio import load_npz, sha256
from ad_core.filters import gaussian_blur_numpy, nearest_resize
from ad_core.graph_io import EMBEDDING_OUTPUT, SCORE_OUTPUTS, onnx_metadata
from ad_core.preprocessing import Preprocess
from ad_core.scoring import DEFAULT_NORMALIZED_THRESHOLD, denormalize

if TYPE_CHECKING:
    import torch

BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "bf16")
BANK_SEARCHES = ("auto", "cells", "faiss")
ENGINE_SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pth": "torch"}


@dataclass
class ScoreBatch:
    """Scores of a batch: raw and normalised image scores, decisions and maps (model resolution)."""

    raw_score: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    anomaly_map: np.ndarray  # normalised, (B, S, S)
    raw_map: np.ndarray  # raw, (B, S, S)


class PatchcoreSearch:
    """Exact nearest-neighbour search of the memory bank plus anomalib's PatchCore image score and map.

    ``engine``: ``"auto"`` (default) uses FAISS's GPU index where a GPU build of FAISS sees a GPU, and
    otherwise :class:`ad_core.knn.CellIndex`, an exact search that skips the bank rows the triangle
    inequality rules out and hands calls where that does not pay to FAISS (same neighbours as brute
    force); ``"cells"`` forces that one; ``"faiss"`` forces FAISS's ``IndexFlatL2`` (GPU index when
    possible).
    """

    def __init__(
        self,
        bank: np.ndarray,
        num_neighbors: int = 9,
        source: str | Path = "memory_bank.npz",
        engine: str = "auto",
    ) -> None:
        if engine not in BANK_SEARCHES:
            raise BundleError(f"bank search {engine!r}: choose one of {', '.join(BANK_SEARCHES)}")
        bank = np.ascontiguousarray(bank, np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0 or not np.isfinite(bank).all():
            raise BundleError(f"{source}: the memory bank must be a finite (N, D) array with N > 0, got {bank.shape}")
        self.source = source
        self.bank = bank
        self.num_neighbors = int(num_neighbors)
        self.on_gpu = False
        self.search_ms = 0.0  # the last call's search and image score, without the map
        if engine in ("auto", "faiss"):
            import faiss

            if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:  # pragma: no cover - GPU only
                self._resources = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(self._resources, 0, faiss.IndexFlatL2(bank.shape[1]))
                self.index.add(bank)
                self.on_gpu, self.engine = True, "faiss-gpu"
                return
            if engine == "faiss":
                self.index = faiss.IndexFlatL2(bank.shape[1])
                self.index.add(bank)
                self.engine = "faiss"
                return
        from ad_core.knn import CellIndex

        self.index, self.engine = CellIndex(bank), "cells"

    @property
    def width(self) -> int:
        """Embedding width D the bank was built for."""
        return int(self.bank.shape[1])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d2, idx = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return np.sqrt(np.maximum(d2, 0.0)), idx.astype(np.int64)

    def __call__(self, embedding: np.ndarray | torch.Tensor, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)`` from embeddings ``(B, D, h, w)``.

        numpy and scipy only, on the calling thread: torch's and OpenBLAS's worker threads busy-wait
        for milliseconds after each call and would take the other cores from the rest of the frame.
        """
        embedding = np.asarray(embedding, np.float32)
        b, d, h, w = embedding.shape
        if d != self.width:
            raise BundleError(
                f"{self.source}: memory bank width {self.width} does not match the graph's embedding width {d}"
            )
        start = time.perf_counter()
        flat = np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, d))
        dist, loc = self._search(flat, 1)
        patch_scores, locations = dist.reshape(b, h * w), loc.reshape(b, h * w)
        rows = np.arange(b)
        max_patches = patch_scores.argmax(1)
        score = patch_scores[rows, max_patches]
        if self.num_neighbors > 1:  # anomalib's re-weighting by the nearest sample's neighbourhood
            bank = self.bank
            max_features = flat.reshape(b, h * w, d)[rows, max_patches]
            nn_sample = bank[locations[rows, max_patches]]
            _, support = self._search(nn_sample, min(self.num_neighbors, len(bank)))
            distances = np.sqrt(((bank[support] - max_features[:, None, :]) ** 2).sum(-1))
            softmax = np.exp(distances - distances.max(1, keepdims=True))
            score = (1.0 - softmax[:, 0] / softmax.sum(1)) * score
        self.search_ms = (time.perf_counter() - start) * 1000.0
        return score.astype(np.float32), gaussian_blur_numpy(
            nearest_resize(patch_scores.reshape(b, 1, h, w), image_size)
        )


# -- graph runners: batch (numpy float32) -> list of numpy outputs ---------------------------------
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
    """The export graph run eagerly in PyTorch."""

    backend = "torch"

    def __init__(self, bundle: Bundle) -> None:
        from ad_core.export import graph_kind, scoring_graph

        self.graph = scoring_graph(bundle)
        self.output_names = [EMBEDDING_OUTPUT] if graph_kind(bundle) == "embedding" else list(SCORE_OUTPUTS)
        module = bundle.model.module
        width = sum(module.feature_extractor.out_dims) if self.output_names == [EMBEDDING_OUTPUT] else None
        self.output_shapes = {EMBEDDING_OUTPUT: ["batch", width, None, None]} if width else {}

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph."""
        import torch

        with torch.no_grad():
            out = self.graph(torch.from_numpy(batch))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


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


class Scorer:
    """Scores images with one graph runner; see :func:`open_scorer`.

    Attributes:
        meta: the meta.json in force (preprocessing, normalisation, threshold).
        backend: ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"torch"``.
        source: the file or folder the graph came from.
    """

    def __init__(
        self,
        meta: dict[str, Any],
        runner: OrtRunner | OpenVinoRunner | TorchRunner | TrtRunner,
        search: PatchcoreSearch | None = None,
        source: str | Path = "",
        bundle: Bundle | None = None,
    ) -> None:
        self.meta, self.runner, self.search, self.source, self.bundle = meta, runner, search, source, bundle
        self.timings: dict[str, float] = {}
        """Milliseconds of the last call's stages: ``preprocess``, ``graph``, ``bank_search`` (PatchCore),
        ``maps`` (PatchCore's map from the distances, and normalisation)."""
        self.backend = runner.backend
        self.model = meta["model"]
        self.image_size = int(meta["image_size"])
        self.preprocess = Preprocess.from_dict(meta["preprocessing"])
        kind = "embedding" if self.model == "patchcore" else "score"
        expected = [EMBEDDING_OUTPUT] if kind == "embedding" else list(SCORE_OUTPUTS)
        if runner.output_names != expected:
            raise BundleError(
                f"{source}: the graph outputs {runner.output_names}; a {self.model} graph outputs {expected} "
                f"(is it the engine of another model?)"
            )
        if kind == "embedding":
            if search is None:
                raise BundleError(f"{source}: PatchCore needs its memory_bank.npz (-m / --memory_bank)")
            shape = runner.output_shapes.get(EMBEDDING_OUTPUT) or []
            width = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
            if width is not None and width != search.width:
                raise BundleError(
                    f"{search.source}: memory bank rows have width {search.width}, but the graph {source} produces "
                    f"embeddings of width {width}: the bank belongs to another backbone or layer set"
                )

    @property
    def image_threshold(self) -> float:
        """The normalised decision threshold in force by default (meta ``image_threshold``)."""
        return float(self.meta.get("image_threshold", DEFAULT_NORMALIZED_THRESHOLD))

    def normalize(self, raw):
        """meta.json's min-max normalisation centred at 0.5."""
        return normalize_with(self.meta, raw)

    def raw_threshold(self, normalized: float) -> float:
        """The raw score that a normalised threshold corresponds to."""
        m = self.meta
        return denormalize(normalized, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"])

    def raw(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(B,)`` and raw maps ``(B, S, S)`` of a preprocessed batch."""
        if batch.shape[-1] != self.image_size or batch.shape[-2] != self.image_size:
            raise BundleError(f"input of size {tuple(batch.shape[-2:])}: this model takes {self.image_size} px")
        array = batch.numpy() if _is_tensor(batch) else batch
        t0 = time.perf_counter()
        outs = self.runner(np.ascontiguousarray(array, np.float32))
        t1 = time.perf_counter()
        self.timings["graph"] = (t1 - t0) * 1000.0
        if self.search is not None:
            score, amap = self.search(outs[0], self.image_size)
            self.timings["bank_search"] = self.search.search_ms
        else:
            score, amap = outs
        return np.asarray(score, np.float32).reshape(-1), np.asarray(amap, np.float32)[:, 0]

    def __call__(self, images: Sequence[np.ndarray] | torch.Tensor, threshold: float | None = None) -> ScoreBatch:
        """Score RGB uint8 images (any size) or a preprocessed ``(B, 3, S, S)`` tensor.

        ``threshold`` is normalised (0-1); default meta.json's ``image_threshold``.
        """
        t0 = time.perf_counter()
        # numpy, not torch.stack: torch's worker threads would busy-wait on the other cores afterwards
        batch = images if _is_tensor(images) else np.stack([self.preprocess.array(im) for im in images])
        self.timings = {"preprocess": (time.perf_counter() - t0) * 1000.0}
        raw, raw_map = self.raw(batch)
        thr = self.image_threshold if threshold is None else float(threshold)
        score = np.atleast_1d(self.normalize(raw))
        out = ScoreBatch(raw, score, score >= thr, self.normalize(raw_map), raw_map)
        spent = (time.perf_counter() - t0) * 1000.0
        self.timings["maps"] = spent - sum(self.timings.values())  # what is left: map post-processing, normalising
        return out


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (no tensor exists before torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _engine_meta(path: Path, meta_json: str | Path | None, embedded: dict[str, str] | None) -> tuple[dict, Path]:
    """meta.json for an engine file: the given one, the one beside it, or (ONNX) the embedded copy."""
    if meta_json is not None:
        return read_meta(meta_json), bundle_dir(meta_json) / "meta.json"
    if (path.parent / "meta.json").is_file():
        return read_meta(path.parent), path.parent / "meta.json"
    if embedded and embedded.get("meta"):
        return json.loads(embedded["meta"]), path
    raise BundleError(f"{path}: no meta.json beside it; pass --meta_json (the one convtrt wrote next to the engine)")


def _check_engine(meta: dict, where: Path, path: Path, model: str | None, image_size: int | None) -> None:
    check_meta_numbers(meta, where)
    if "preprocessing" not in meta:
        raise BundleError(f"{where}: no 'preprocessing' entry; re-export with `ad-core convtrt`")
    if model is not None and meta["model"] != model:
        raise BundleError(f"{path} holds a {meta['model']} model, not {model} ({where})")
    if image_size is not None and int(image_size) != int(meta["image_size"]):
        raise BundleError(f"{path} takes {meta['image_size']} px images, not {image_size} (-i / --image_size)")


def _bank_for(meta: dict, folder: Path, memory_bank: str | Path | None, engine: str = "auto") -> PatchcoreSearch | None:
    if meta["model"] != "patchcore":
        if memory_bank is not None:
            raise BundleError(f"--memory_bank is for PatchCore only; this is a {meta['model']} model")
        return None
    path = Path(memory_bank) if memory_bank is not None else folder / meta.get("memory_bank", "memory_bank.npz")
    if not path.is_file():
        raise BundleError(f"{path}: memory bank not found (pass -m / --memory_bank)")
    if memory_bank is None:
        expected = meta.get("sha256", {}).get(path.name)
        if expected and sha256(path) != expected:
            raise BundleError(f"{path} does not match the sha256 in meta.json: it belongs to another export")
    try:
        arrays = load_npz(path)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable .npz ({exc})") from exc
    if "memory_bank" not in arrays:
        raise BundleError(f"{path}: no array named 'memory_bank' inside")
    return PatchcoreSearch(arrays["memory_bank"], int(meta.get("num_neighbors", 9)), path, engine)


def open_scorer(
    source: Bundle | str | Path,
    backend: str | None = None,
    onnx_path: str | Path | None = None,
    *,
    memory_bank: str | Path | None = None,
    meta_json: str | Path | None = None,
    model: str | None = None,
    image_size: int | None = None,
    precision: str = "fp32",
    bank_search: str = "auto",
    spinning: bool | None = None,
) -> Scorer:
    """Open a model for scoring.

    Args:
        source: a loaded :class:`Bundle`, a run directory / ``pytorch/`` folder / meta.json, or an
            engine file: ``model.onnx``, ``model.plan`` (TensorRT) or ``model.pth``.
        backend: ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"torch"``; default from the
            file's suffix, ONNX Runtime for a bundle (its graph is exported in memory).
        onnx_path: for a bundle: an exported ``model.onnx`` to run, checked against the bundle.
        memory_bank: PatchCore's ``memory_bank.npz`` when it is not the one meta.json names.
        meta_json: the meta.json to use when it is not beside the file.
        model: refuse to run unless the source holds this model.
        image_size: refuse to run unless the model takes images of this size.
        precision: ``"fp32"`` (default: every backend gives the same scores) or ``"bf16"`` (OpenVINO
            only: bfloat16 on CPUs with AVX512-BF16/AMX, faster, scores within about 1 %). TensorRT's
            reduced precision is chosen when the engine is built (``convtrt --fp16``).
        bank_search: PatchCore's memory-bank search: ``"auto"`` (FAISS's GPU index where FAISS sees a
            GPU, else the pruned exact :class:`ad_core.knn.CellIndex`), ``"cells"`` or ``"faiss"``
            (``IndexFlatL2``). All three return the same neighbours; see :class:`PatchcoreSearch`.
        spinning: whether ONNX Runtime's idle worker threads busy-wait for the next operator. Default:
            yes for full scoring graphs when the process does nothing else (15-22 % faster), no for
            PatchCore's embedding graph (a search follows it). A process whose other threads need
            the cores between frames (the ROS node: DDS, executor, map rendering) passes False.
    """
    if bank_search not in BANK_SEARCHES:
        raise BundleError(f"bank search {bank_search!r}: choose one of {', '.join(BANK_SEARCHES)}")
    if precision not in PRECISIONS:
        raise BundleError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and backend != "openvino":
        raise BundleError(
            f"precision {precision} is an OpenVINO option (--backend openvino); for TensorRT build the engine "
            f"with `ad-core convtrt --fp16`"
        )
    if backend is not None and backend not in BACKENDS:
        raise BundleError(f"backend {backend!r} is not available here; choose one of {', '.join(BACKENDS)}")
    source = _engine_in_folder(source, backend)
    if isinstance(source, Bundle) or Path(source).suffix.lower() not in ENGINE_SUFFIXES:
        bundle = source if isinstance(source, Bundle) else load_bundle(source, image_size, model=model)
        return _from_bundle(bundle, backend or "onnxruntime", onnx_path, memory_bank, precision, bank_search, spinning)
    path = Path(source)
    if not path.is_file():
        raise BundleError(f"{path}: no such engine file")
    kind = ENGINE_SUFFIXES[path.suffix.lower()]
    if kind == "onnxruntime" and backend == "openvino":
        kind = "openvino"
    if backend is not None and backend != kind:
        raise BundleError(f"{path}: a {path.suffix} file runs on the {kind} backend, not {backend}")
    if kind == "torch":
        meta_src = meta_json if meta_json is not None else path.parent
        bundle = load_bundle(meta_src, image_size, weights=path, arrays=memory_bank, model=model)
        return _from_bundle(bundle, "torch", None, None, bank_search=bank_search)
    data = path.read_bytes()
    embedded = onnx_metadata(data, path) if kind in ("onnxruntime", "openvino") else None
    meta, where = _engine_meta(path, meta_json, embedded)
    _check_engine(meta, where, path, model, image_size)
    if embedded is not None:
        _check_onnx_against(embedded, meta, path, where)
    engine_info = meta.get("engine", {})
    planned = kind == "tensorrt" and engine_info.get("plan_sha256") and engine_info.get("plan") == path.name
    if planned and sha256(path) != engine_info["plan_sha256"]:
        raise BundleError(f"{path} is not the engine {where} was written with (sha256 differs)")
    runner = _runner(
        kind, data, path, precision, spinning=meta["model"] != "patchcore" if spinning is None else spinning
    )
    folder = where.parent if where.name == "meta.json" else path.parent
    return Scorer(meta, runner, _bank_for(meta, folder, memory_bank, bank_search), path)


def _engine_in_folder(source: Bundle | str | Path, backend: str | None) -> Bundle | str | Path:
    """A convtrt output folder stands for its plan where TensorRT runs, else its ONNX graph."""
    if isinstance(source, Bundle) or not (Path(source) / "meta.json").is_file():
        return source
    engine = read_meta(source).get("engine")
    if not engine:
        return source
    plan = engine.get("plan")
    use_plan = plan and backend in (None, "tensorrt") and _tensorrt_usable()
    return Path(source) / (plan if use_plan else engine["onnx"])


def _runner(
    kind: str, data: bytes, path: Path, precision: str, spinning: bool = False
) -> OrtRunner | OpenVinoRunner | TrtRunner:
    if kind == "onnxruntime":
        return OrtRunner(data, spinning)
    if kind == "openvino":
        return OpenVinoRunner(data, path, precision)
    return TrtRunner(data, path)


def _tensorrt_usable() -> bool:
    from ad_core.convert import tensorrt_available

    return tensorrt_available()[0]


def _check_onnx_against(embedded: dict[str, str], meta: dict, path: Path, where: Path | str) -> None:
    want = {"model": meta["model"], "image_size": str(meta["image_size"])}
    got = {k: embedded.get(k) for k in want}
    if got != want:
        raise BundleError(
            f"{path} was exported for model {got['model']} at image size {got['image_size']}; {where} describes "
            f"{want['model']} at {want['image_size']}"
        )


def _from_bundle(
    bundle: Bundle,
    backend: str,
    onnx_path: str | Path | None,
    memory_bank,
    precision: str = "fp32",
    bank_search: str = "auto",
    spinning: bool | None = None,
) -> Scorer:
    meta = {**bundle.meta, "preprocessing": bundle.preprocess.to_dict()}
    search = None
    if bundle.meta["model"] == "patchcore":
        if memory_bank is not None:
            search = _bank_for(meta, bundle.path, memory_bank, bank_search)
        else:
            bank = bundle.model.module.memory_bank.cpu().numpy()
            neighbors = int(meta.get("num_neighbors", 9))
            search = PatchcoreSearch(bank, neighbors, bundle.path / "memory_bank.npz", bank_search)
    if backend == "torch":
        return Scorer(meta, TorchRunner(bundle), search, bundle.path, bundle)
    if backend == "tensorrt":
        raise BundleError(f"{bundle.path}: TensorRT runs a built engine: run `ad-core convtrt` and open its model.plan")
    if onnx_path is None:
        from ad_core.export import onnx_bytes

        model_bytes = onnx_bytes(bundle)
    else:
        model_bytes = Path(onnx_path).read_bytes()
        embedded = onnx_metadata(model_bytes, onnx_path)
        _check_onnx_against(embedded, meta, Path(onnx_path), "this bundle")
        sha = bundle.meta.get("sha256", {}).get(bundle.meta["weights_pth"])
        if embedded.get("weights_sha256") and sha and embedded["weights_sha256"] != sha:
            raise BundleError(
                f"{onnx_path} was exported from other weights than this bundle's {bundle.meta['weights_pth']}"
            )
    if backend == "openvino":
        runner = OpenVinoRunner(model_bytes, bundle.path, precision)
    else:
        runner = OrtRunner(model_bytes, spinning=search is None if spinning is None else spinning)
    return Scorer(meta, runner, search, onnx_path or bundle.path, bundle)
