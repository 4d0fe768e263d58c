"""Export a bundle's scoring graph to ONNX (TensorRT engines are built from it on the device).

Graphs (input ``image``: ``(B, 3, S, S)`` float32, preprocessed as meta.json says):

Each model's spec names its graph (``ad_core/models/<name>/graph.py``, or the generic
:class:`ad_core.models.graphs.ScoreGraph`) and its kind:

* ``"score"`` (PaDiM, EfficientAD, VAE): outputs ``pred_score (B,)`` (raw) and ``anomaly_map
  (B, 1, S, S)``. PaDiM's mean and inverse covariance are constants in the graph.
* ``"embedding"`` (PatchCore): the graph stops at the patch embeddings, output ``embedding (B, D,
  h, w)``; the memory bank stays in ``memory_bank.npz`` and the model's head searches it. Putting
  the bank inside the graph is what breaks anomalib's PatchCore ONNX/TensorRT export for real banks.
  (``convtrt`` also writes the search alone as ``search.onnx`` / ``search.plan`` for a GPU to run:
  :mod:`ad_core.models.patchcore.search_graph`.)

The ONNX file carries metadata (model, image size, sha256 of the weights it came from) so a
runtime can refuse a graph that belongs to another bundle.
"""

from __future__ import annotations

import io
import json
from enum import Enum
from pathlib import Path

import onnx
import torch
from torch import nn

from ad_core.bundle import Bundle
from ad_core.fileio import write_bytes_atomic
from ad_core.graph_io import EMBEDDING_OUTPUT, META_PREFIX, SCORE_OUTPUTS, onnx_metadata

__all__ = ["EMBEDDING_OUTPUT", "SCORE_OUTPUTS", "export_onnx", "onnx_bytes", "onnx_metadata", "scoring_graph"]

# meta.json keys copied into the ONNX file so that a lone model.onnx can be scored
EMBEDDED_META_KEYS = (
    "model",
    "category",
    "image_size",
    "image_threshold",
    "image_threshold_auto",
    "raw_image_min",
    "raw_image_max",
    "num_neighbors",
    "preprocessing",
    "memory_bank",
)


class ExportType(str, Enum):
    """Export formats."""

    ONNX = "onnx"
    TENSORRT = "tensorrt"


def scoring_graph(bundle: Bundle) -> nn.Module:
    """The torch module that is exported (and run by the torch backend), in eval mode."""
    return bundle.model.scoring_graph()


def graph_kind(bundle: Bundle) -> str:
    """``"embedding"`` (the head finishes the score) or ``"score"``, from the model's spec."""
    return bundle.model.spec.graph_kind


def onnx_bytes(bundle: Bundle, opset: int = 17) -> bytes:
    """Export the bundle's scoring graph to an ONNX model (bytes), checked with ``onnx.checker``."""
    if opset not in (17, 18):
        raise ValueError(f"opset {opset}: use 17 or 18 (TensorRT 10 on JetPack 6)")
    bundle.model.to("cpu")  # the graph is traced on the CPU, whatever device the model trained or tested on
    graph = scoring_graph(bundle)
    size = int(bundle.meta["image_size"])
    outputs = bundle.model.spec.outputs
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (torch.zeros(1, 3, size, size),),
            buf,
            opset_version=opset,
            input_names=["image"],
            output_names=outputs,
            dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    meta = {**bundle.meta, "preprocessing": bundle.preprocess.to_dict()}
    props = {
        "model": bundle.meta["model"],
        "image_size": str(size),
        "graph": graph_kind(bundle),
        "weights_sha256": bundle.meta.get("sha256", {}).get(bundle.meta["weights_pth"], ""),
        "meta": json.dumps({k: meta[k] for k in EMBEDDED_META_KEYS if k in meta}),
    }
    if getattr(graph, "embedding_dim", None):
        props["embedding_dim"] = str(graph.embedding_dim)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_onnx(bundle: Bundle, path: str | Path, opset: int = 17) -> Path:
    """Write the ONNX graph atomically to ``path``."""
    path = Path(path)
    write_bytes_atomic(path, onnx_bytes(bundle, opset))
    return path
