"""One runtime for PC and Jetson: open a model from any of its forms, score a batch with a chosen backend.

``open_scorer(source, backend)`` returns a :class:`Scorer`; calling it on RGB images (or an already
preprocessed batch) gives a :class:`ScoreBatch`: raw score, normalised score, decision and anomaly
map. ``source`` is a trained bundle (run directory, ``pytorch/`` folder, meta.json), an engine folder
written by ``convtrt``, an exported ``model.onnx``, a TensorRT ``model.plan`` or a ``model.pth``.

A Scorer is two steps, the same everywhere: the model's export graph (its spec's ``graph``) run by a
backend of :mod:`ad_core.runners`, then the model's head (its spec's ``head``, numpy on the calling
thread). Training, ``ad-core test`` and tuning score through :meth:`Scorer.for_model` (torch runs
the graph); deployed, ONNX Runtime, OpenVINO or TensorRT run the exported copy of that graph:

* ``"onnxruntime"`` (default): ONNX Runtime on CPU (CUDA provider when present);
* ``"openvino"``: the same ONNX graph compiled by OpenVINO for Intel/AMD x86 CPUs (optional
  ``openvino`` package; about twice as fast as ONNX Runtime for EfficientAD on a PC CPU);
* ``"tensorrt"``: a serialised TensorRT engine on an NVIDIA GPU (Jetson or PC);
* ``"torch"``: the graph in PyTorch.

Everything a graph needs besides its weights comes from meta.json (preprocessing, normalisation,
threshold): the one next to the file, or ``meta_json``, or (ONNX only) the copy embedded in the
graph at export. A head that needs the bundle's arrays at run time (PatchCore's memory bank: its
graph ends at the patch embeddings) reads them from the file meta.json names, checked by sha256.
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

from ad_core.bundle import (
    Bundle,
    bundle_dir,
    check_meta_numbers,
    load_bundle,
    normalize_map_with,
    normalize_with,
    pixel_threshold_of,
    read_meta,
)
from ad_core.errors import BundleError
from ad_core.fileio import load_npz, sha256
from ad_core.graph_io import onnx_metadata
from ad_core.models.registry import flag_owner_error, get_spec
from ad_core.preprocessing import Preprocess
from ad_core.runners import OpenVinoRunner, OrtRunner, TorchRunner, TrtRunner
from ad_core.scoring import DEFAULT_NORMALIZED_THRESHOLD, Threshold, denormalize

if TYPE_CHECKING:
    import torch

    from ad_core.models.base import AnomalyModel

BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "bf16")
BANK_SEARCHES = ("auto", "cells", "faiss", "torch", "engine")  # PatchCore's (its head says what each does)
ENGINE_SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pth": "torch"}


@dataclass
class ScoreBatch:
    """Scores of a batch: raw and normalised image scores, decisions and maps (model resolution)."""

    raw_score: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    anomaly_map: np.ndarray  # normalised with the pixel keys (the image keys without them), (B, S, S)
    raw_map: np.ndarray  # raw, (B, S, S); (B, rows * S, cols * S) for a model trained on tiles


class Scorer:
    """Scores images with one graph runner and the model's head; see :func:`open_scorer`.

    Attributes:
        meta: the meta.json in force (preprocessing, normalisation, threshold).
        backend: ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"torch"``.
        head: the model's step after the graph (PatchCore's bank search; a pass-through otherwise).
        source: the file or folder the graph came from.
    """

    def __init__(
        self,
        meta: dict[str, Any],
        runner: OrtRunner | OpenVinoRunner | TorchRunner | TrtRunner,
        head: Any,
        source: str | Path = "",
        bundle: Bundle | None = None,
    ) -> None:
        self.meta, self.runner, self.head, self.source, self.bundle = meta, runner, head, source, bundle
        self.timings: dict[str, float] = {}
        """Milliseconds of the last call's stages: ``preprocess``, ``graph``, the head's own (PatchCore:
        ``bank_search``), ``maps`` (the rest: map post-processing and normalisation)."""
        self.backend = runner.backend
        self.model = meta["model"]
        self.spec = get_spec(self.model)
        self.image_size = int(meta["image_size"])
        self.preprocess = Preprocess.from_dict(meta["preprocessing"])
        expected = self.spec.outputs
        if runner.output_names != expected:
            raise BundleError(
                f"{source}: the graph outputs {runner.output_names}; a {self.model} graph outputs {expected} "
                f"(is it the engine of another model?)"
            )
        head.check(runner.output_shapes, source)
        if isinstance(runner, TorchRunner):  # PatchCore's search on the graph's GPU: no round trip through the host
            runner.keep_on_device = getattr(head, "takes_tensors", False)

    @classmethod
    def for_model(cls, model: AnomalyModel, bank_search: str = "auto") -> Scorer:
        """The scoring path of a model in memory (training, calibration, testing): torch graph + head.

        Only raw scores are defined until the model is calibrated (:meth:`raw`).
        """
        meta = {
            **model.hparams,
            "model": model.name,
            "image_size": model.image_size,
            "preprocessing": model.preprocess.to_dict(),
        }
        head_cls = model.spec.head_class
        arrays = model.artifacts() if head_cls.uses_arrays else None
        bank_search = _beside_the_graph(model, bank_search)
        return cls(meta, TorchRunner(model), head_cls.open(meta, arrays, f"{model.name} (in memory)", bank_search))

    @property
    def search(self) -> Any:
        """PatchCore's bank search (the head), or None for models whose graph scores on its own."""
        return self.head if getattr(self.head, "uses_arrays", False) else None

    @property
    def image_threshold(self) -> float:
        """The normalised decision threshold in force by default (meta ``image_threshold``)."""
        return float(self.meta.get("image_threshold", DEFAULT_NORMALIZED_THRESHOLD))

    def normalize(self, raw):
        """meta.json's min-max normalisation centred at 0.5."""
        return normalize_with(self.meta, raw)

    def normalize_map(self, raw_map):
        """Anomaly maps normalised with meta.json's pixel keys (the image keys when it has none)."""
        return normalize_map_with(self.meta, raw_map)

    @property
    def pixel_threshold(self) -> float:
        """The normalised pixel threshold in force by default (meta ``pixel_threshold``, 0.5)."""
        return pixel_threshold_of(self.meta)

    def raw_threshold(self, normalized: float) -> float:
        """The raw score that a normalised threshold corresponds to."""
        m = self.meta
        return denormalize(normalized, m["image_threshold_auto"], m["raw_image_min"], m["raw_image_max"])

    def raw(self, batch: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(B,)`` and raw maps ``(B, S, S)`` of a preprocessed batch."""
        if batch.shape[-1] != self.image_size or batch.shape[-2] != self.image_size:
            raise BundleError(f"input of size {tuple(batch.shape[-2:])}: this model takes {self.image_size} px")
        if self.backend != "torch":
            array = batch.numpy() if _is_tensor(batch) else batch
            batch = np.ascontiguousarray(array, np.float32)
        t0 = time.perf_counter()
        limit = int(self.meta.get("engine", {}).get("max_batch") or 0)  # a TensorRT engine's profile
        if limit and len(batch) > limit:
            parts = [self.runner(batch[i : i + limit]) for i in range(0, len(batch), limit)]
            outs = [_concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
        else:
            outs = self.runner(batch)
        self.timings["graph"] = (time.perf_counter() - t0) * 1000.0
        score, amap = self.head(outs, self.image_size)
        self.timings.update(self.head.timings)
        return np.asarray(score, np.float32).reshape(-1), np.asarray(amap, np.float32)[:, 0]

    def __call__(
        self, images: Sequence[np.ndarray] | torch.Tensor, threshold: float | Threshold | None = None
    ) -> ScoreBatch:
        """Score RGB uint8 images (any size) or a preprocessed ``(B, 3, S, S)`` batch.

        ``threshold``: a normalised number (0-1) or a :class:`ad_core.scoring.Threshold` (raw or
        normalised); default meta.json's ``image_threshold``. The decision is made here, once. A model
        trained on tiles (meta.json ``preprocessing.tiles``) scores every tile of each image and
        returns one score per image and maps of ``(rows * S, cols * S)``; a preprocessed batch is then
        read as the tiles of ``B / tiles`` images, in order.
        """
        t0 = time.perf_counter()
        pre = self.preprocess
        if _is_tensor(images):
            batch = images
        elif pre.n_tiles == 1:  # numpy, not torch.stack: torch's threads would busy-wait on the other cores
            batch = np.stack([pre.array(im) for im in images])
        else:
            batch = np.concatenate([pre.tile_arrays(im) for im in images])
        if len(batch) % pre.n_tiles:
            raise BundleError(f"a batch of {len(batch)} tiles: this model cuts each image into {pre.n_tiles}")
        self.timings = {"preprocess": (time.perf_counter() - t0) * 1000.0}
        raw, raw_map = pre.merge_tiles(*self.raw(batch))
        if not isinstance(threshold, Threshold):
            threshold = Threshold(self.image_threshold if threshold is None else float(threshold))
        score = np.atleast_1d(self.normalize(raw))
        out = ScoreBatch(raw, score, threshold.decide(raw, score), self.normalize_map(raw_map), raw_map)
        spent = (time.perf_counter() - t0) * 1000.0
        self.timings["maps"] = spent - sum(self.timings.values())  # what is left: map post-processing, normalising
        return out


def _beside_the_graph(model: AnomalyModel, bank_search: str) -> str:
    """``auto`` for a torch graph on a GPU: search the bank on that GPU (no round trip through the host)."""
    device = model.device.torch()
    return f"torch:{device}" if bank_search == "auto" and device.type == "cuda" else bank_search


def _concatenate(parts: list) -> Any:
    """Batch parts joined: numpy arrays on the host, or tensors where they are (a torch runner's ``keep_on_device``)."""
    if _is_tensor(parts[0]):
        return sys.modules["torch"].cat(parts)
    return np.concatenate([np.asarray(p) for p in parts])


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


def _runtime_arrays(meta: dict, folder: Path, override: str | Path | None) -> tuple[dict | None, Path | None]:
    """The arrays a head needs at run time (PatchCore's bank), from ``override`` or the file meta.json names."""
    spec = get_spec(meta["model"])
    if not spec.head_class.uses_arrays:
        if override is not None:
            raise BundleError(str(flag_owner_error("--memory_bank", "artifact_key", "memory_bank", meta["model"])))
        return None, None
    path = Path(override) if override is not None else folder / meta.get(spec.artifact_key, spec.artifact_file)
    if not path.is_file():
        raise BundleError(f"{path}: {spec.artifact_file} not found (pass -m / --memory_bank)")
    if override is None:
        expected = meta.get("sha256", {}).get(path.name)
        if expected and sha256(path) != expected:
            raise BundleError(f"{path} does not match the sha256 in meta.json: it belongs to another export")
    try:
        return load_npz(path), path
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable .npz ({exc})") from exc


def _head_for(meta: dict, folder: Path, override: str | Path | None, bank_search: str, backend: str) -> Any:
    arrays, path = _runtime_arrays(meta, folder, override)
    return get_spec(meta["model"]).head_class.open(meta, arrays, path or folder, bank_search, folder, backend)


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
    device: str | None = None,
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
            GPU, else the pruned exact ``CellIndex``), ``"cells"``, ``"faiss"`` (``IndexFlatL2``) or
            ``"torch"`` (the bank on the GPU through torch) or ``"engine"`` (the search graph convtrt wrote
            beside an engine; ``auto`` picks it where the graph runs on TensorRT). All return the same neighbours; see
            :class:`ad_core.models.patchcore.head.PatchcoreHead`.
        spinning: whether ONNX Runtime's idle worker threads busy-wait for the next operator. Default:
            yes for full scoring graphs when the process does nothing else (15-22 % faster), no for
            PatchCore's embedding graph (a search follows it). A process whose other threads need
            the cores between frames (the ROS node: DDS, executor, map rendering) passes False.
        device: ``auto`` (default: CUDA where available), ``cpu``, ``cuda`` or ``cuda:N``: where the torch
            backend runs the graph, and which execution provider ONNX Runtime uses (CUDA needs
            onnxruntime-gpu). TensorRT always runs on the GPU; OpenVINO on the CPU.
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
        return _from_bundle(
            bundle, backend or "onnxruntime", onnx_path, memory_bank, precision, bank_search, spinning, device
        )
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
        return _from_bundle(bundle, "torch", None, None, bank_search=bank_search, device=device)
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
    folder = where.parent if where.name == "meta.json" else path.parent
    head = _head_for(meta, folder, memory_bank, bank_search, kind)
    # a graph followed by a search must not spin: the spinning threads would fight the search for the cores
    runner = _runner(
        kind, data, path, precision, spinning=not head.uses_arrays if spinning is None else spinning, device=device
    )
    return Scorer(meta, runner, head, path)


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
    kind: str, data: bytes, path: Path, precision: str, spinning: bool = False, device: str | None = None
) -> OrtRunner | OpenVinoRunner | TrtRunner:
    if kind == "onnxruntime":
        return OrtRunner(data, spinning, device)
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
    device: str | None = None,
) -> Scorer:
    meta = {**bundle.meta, "preprocessing": bundle.preprocess.to_dict()}
    head_cls = bundle.model.spec.head_class
    if backend == "torch":
        bundle.model.to(device or "auto")
        bank_search = _beside_the_graph(bundle.model, bank_search)
    if memory_bank is not None:
        head = _head_for(meta, bundle.path, memory_bank, bank_search, backend)
    else:
        arrays = bundle.model.artifacts() if head_cls.uses_arrays else None
        source = bundle.path / (bundle.model.artifact_file or "")
        head = head_cls.open(meta, arrays, source, bank_search, bundle.path, backend)
    if backend == "torch":
        return Scorer(meta, TorchRunner(bundle.model), head, bundle.path, bundle)
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
        runner = OrtRunner(model_bytes, spinning=not head.uses_arrays if spinning is None else spinning, device=device)
    return Scorer(meta, runner, head, onnx_path or bundle.path, bundle)
