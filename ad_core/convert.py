"""ONNX export and TensorRT engine build (seed ``convtrt.py``).

``convtrt(...)`` writes into ``out_dir``:

* ``model.onnx``: the scoring graph of :mod:`ad_core.export`, checked with ``onnx.checker`` and
  simplified with onnxslim when the simplified graph gives the same outputs (else the original is kept);
* ``model.plan``: a TensorRT engine, only where TensorRT and an NVIDIA GPU are present (otherwise a
  message says so and the ONNX file is the result);
* ``model.pth`` and the array file (``memory_bank.npz``, ``stats.npz``): the bundle's weights and
  arrays, so that the engine folder alone is enough to retrain and convert again on the Jetson.
  PatchCore's runtime searches ``memory_bank.npz``; PaDiM's statistics are also constants of the
  graph, the copy is for retraining;
* ``meta.json``: everything a runtime needs besides the graph (preprocessing, normalisation,
  threshold), the bundle keys naming the files above, sha256 of every file, and an ``engine``
  entry (opset, fp16, where it was converted from). The original meta.json is not changed.

The folder is staged and its files put in place together, meta.json last
(:func:`ad_core.rundir.staged`): a failed conversion leaves an earlier engine folder as it was.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.bundle import Bundle, load_bundle, separate_out_dir, write_bundle
from ad_core.errors import ConfigError, ExportError
from ad_core.export import onnx_bytes
from ad_core.fileio import sha256, write_bytes_atomic
from ad_core.models.registry import flag_owner_error, get_spec
from ad_core.rundir import staged

PARITY_RTOL = 1e-4  # simplified vs original graph, on random input


@dataclass
class ConvertResult:
    """What convtrt wrote."""

    onnx: Path
    plan: Path | None
    meta: Path
    memory_bank: Path | None
    simplified: bool
    message: str


def _run_onnx(model: bytes, batch: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"image": batch})


def simplify(model: bytes, image_size: int) -> tuple[bytes, bool]:
    """The onnxslim-simplified graph when it matches the original on random input, else the original."""
    import onnx
    import onnxslim

    try:
        slim = onnxslim.slim(onnx.load_from_string(model))
        onnx.checker.check_model(slim)
        slim_bytes = slim.SerializeToString()
    except Exception:  # any failure of the simplifier keeps the original graph
        return model, False
    batch = np.random.default_rng(0).standard_normal((2, 3, image_size, image_size)).astype(np.float32)
    ref, got = _run_onnx(model, batch), _run_onnx(slim_bytes, batch)
    for a, b in zip(ref, got, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, rtol=PARITY_RTOL, atol=PARITY_RTOL * float(np.abs(a).max())):
            return model, False
    return slim_bytes, True


def search_max_queries(rows: int, budget: int = 2**26) -> int:
    """Queries one call of a ``search.plan`` takes, between 64 and 4,096 (four 32x32 patch grids).

    Its ``(queries, rows)`` distance matrix stays within ``budget`` elements (256 MB of fp32 in a
    Jetson's shared memory); the head splits larger calls.
    """
    return max(64, min(4096, budget // max(1, int(rows))))


def tensorrt_available() -> tuple[bool, str]:
    """Whether a TensorRT engine can be built here, and why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "TensorRT is not installed (JetPack ships it; on a PC: pip install 'ad-inspect[gpu]')"
    from ad_core.cuda_mem import gpu_count

    if gpu_count() == 0:
        return False, "no NVIDIA GPU is visible to the CUDA bindings (cuda-python / pycuda; see nvidia-smi)"
    return True, ""


def build_engine(
    onnx_model: bytes,
    image_size: int,
    fp16: bool = False,
    workspace_mb: int = 4096,
    use_dla: bool = False,
    max_batch: int = 8,
    profile_of: tuple[str, tuple, tuple, tuple] | None = None,
) -> bytes:  # pragma: no cover - needs TensorRT and a GPU (tests/test_gpu.py on the device)
    """Build a serialised TensorRT engine from ONNX bytes (input ``image``, batch 1..``max_batch``).

    ``profile_of``: another input's name and its min, opt and max shapes (PatchCore's search graph).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x (JetPack 5)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        # fp32 is IEEE fp32, as in the torch scorer that calibrated the thresholds: TensorRT allows TF32
        # by default on Ampere and newer (Jetson Orin too), 10 bits of mantissa, scores ~1e-3 away
        config.clear_flag(trt.BuilderFlag.TF32)
    if use_dla:
        if builder.num_DLA_cores == 0:
            raise ConfigError("--use_dla: this device has no DLA core (the Jetson Orin Nano has none)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 0
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    shape = (3, image_size, image_size)
    profile.set_shape(*(profile_of or ("image", (1, *shape), (1, *shape), (max_batch, *shape))))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(serialized)


def _engine_meta(bundle: Bundle, weights_file: Path, engine: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in bundle.meta.items() if k not in ("sha256", "engine", "retrain")}
    meta["preprocessing"] = bundle.preprocess.to_dict()
    meta["engine"] = {
        **engine,
        "from_meta_json": str((bundle.path / "meta.json").resolve()),
        "from_weights": str(weights_file.resolve()),
        "from_weights_sha256": sha256(weights_file),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    spec = bundle.model.spec
    if spec.artifact_in_graph:
        meta["engine"][spec.artifact_key] = f"embedded in the graph; {spec.artifact_file} beside it is for retraining"
    return meta


def convtrt(
    model: str,
    weights_pth: str | Path | None,
    meta_json: str | Path,
    out_dir: str | Path,
    *,
    memory_bank: str | Path | None = None,
    stats: str | Path | None = None,
    opset: int = 17,
    fp16: bool = False,
    workspace: int = 4096,
    use_dla: bool = False,
    max_batch: int = 8,
) -> ConvertResult:
    """Export ``weights_pth`` + ``meta_json`` (+ bank / stats) to ONNX and, where possible, TensorRT.

    Args:
        model: ``patchcore``, ``padim``, ``efficientad`` or ``vae``; must match meta.json.
        weights_pth: the final weights (e.g. ``retrained/model.pth``); None: the ones meta.json names.
        meta_json: the bundle's meta.json, or any folder or file that stands for it: a run directory,
            a ``pytorch/``, retrain or engine folder, a ``model.onnx`` / ``model.plan`` beside a meta.json.
        out_dir: output folder (e.g. ``<model>/engine``).
        memory_bank: PatchCore's bank (default: the one meta.json names).
        stats: PaDiM's ``stats.npz`` (default: the one meta.json names); embedded in the graph.
        opset: ONNX opset, 17 or 18 (TensorRT 10 on JetPack 6).
        fp16: build the engine in FP16 (default: IEEE fp32, TensorRT's TF32 turned off, scores as on the CPU).
        workspace: TensorRT workspace in MiB.
        use_dla: build for the DLA (Jetson AGX/NX Orin; the Orin Nano has none).
        max_batch: largest batch the engine accepts.
    """
    spec = get_spec(model)
    for flag, value, key in (("--memory_bank", memory_bank, "memory_bank"), ("--stats", stats, "stats")):
        if value is not None and spec.artifact_key != key:
            raise flag_owner_error(flag, "artifact_key", key, model)
    if opset not in (17, 18):
        raise ConfigError(f"--opset {opset}: use 17 or 18 (TensorRT 10 on JetPack 6)")
    if workspace <= 0:
        raise ConfigError(f"--workspace {workspace}: give the TensorRT workspace in MiB, e.g. 4096")
    meta_path, out = separate_out_dir(meta_json, out_dir, "engine")
    bundle = load_bundle(meta_path, weights=weights_pth, arrays=memory_bank or stats, model=model)
    weights_file = Path(weights_pth) if weights_pth is not None else bundle.path / bundle.meta["weights_pth"]
    size = int(bundle.meta["image_size"])
    graph, simplified = simplify(onnx_bytes(bundle, opset), size)
    engine: dict[str, Any] = {"onnx": "model.onnx", "opset": opset, "simplified": simplified, "plan": None}
    search = getattr(spec.head_class, "search_graph", None)  # PatchCore: the bank search as a graph of its own
    search_graph, search_info = search(bundle.model.artifacts(), bundle.meta, opset) if search else (None, {})
    ok, why = tensorrt_available()
    with staged(out, "merge") as stage:
        write_bytes_atomic(stage.path / "model.onnx", graph)
        digests = {"model.onnx": sha256(stage.path / "model.onnx")}
        engine["onnx_sha256"] = digests["model.onnx"]
        engine.update(search_info)  # search_skipped says why where there is no search graph
        if search_graph is not None:
            write_bytes_atomic(stage.path / "search.onnx", search_graph)
            digests["search.onnx"] = sha256(stage.path / "search.onnx")
            engine.update(search_onnx="search.onnx", search_plan=None)
        if ok:  # pragma: no cover - GPU only
            import tensorrt as trt

            write_bytes_atomic(
                stage.path / "model.plan", build_engine(graph, size, fp16, workspace, use_dla, max_batch)
            )
            digests["model.plan"] = sha256(stage.path / "model.plan")
            if search_graph is not None:  # fp32 whatever the model engine's precision: distances need the digits
                width, limit = search_info["search_width"], search_max_queries(search_info["search_rows"])
                shapes = ("queries", (1, width), (min(1024, limit), width), (limit, width))
                try:
                    plan = build_engine(search_graph, size, False, workspace, False, profile_of=shapes)
                except Exception as exc:  # the model's engine stands; its bank is then searched on the CPU
                    engine["search_skipped"] = f"TensorRT could not build search.plan: {exc}"
                else:
                    write_bytes_atomic(stage.path / "search.plan", plan)
                    digests["search.plan"] = sha256(stage.path / "search.plan")
                    engine.update(search_plan="search.plan", search_max_queries=limit)
            engine.update(
                plan="model.plan",
                plan_sha256=digests["model.plan"],
                fp16=fp16,
                workspace_mb=workspace,
                use_dla=use_dla,
                max_batch=max_batch,
                tensorrt=trt.__version__,
            )
            message = f"wrote {out / 'model.onnx'} and {out / 'model.plan'} (TensorRT {trt.__version__}, fp16={fp16})"
        else:
            message = f"wrote {out / 'model.onnx'}; no TensorRT engine: {why}. The ONNX file runs with ONNX Runtime."
        if search_graph is not None:
            message += f" PatchCore's bank search: {', '.join(n for n in digests if n.startswith('search.'))}."
        if engine.get("search_skipped"):
            message += f" The bank will be searched on the CPU: {engine['search_skipped']}."
        meta = {**_engine_meta(bundle, weights_file, engine), "sha256": digests}
        write_bundle(bundle.model, stage.path, meta)
    plan_path = out / "model.plan" if ok else None
    bank_path = out / spec.artifact_file if spec.head_class.uses_arrays else None
    return ConvertResult(out / "model.onnx", plan_path, out / "meta.json", bank_path, simplified, message)
