"""One runtime for PC and Jetson: load a bundle, score a batch with a chosen backend.

``open_scorer(bundle, backend)`` returns a :class:`Scorer` whose call takes RGB images (or an
already preprocessed batch) and returns a :class:`ScoreBatch`: raw score, normalised score,
decision and anomaly map. Backends run the graph of :mod:`ad_core.export`:

* ``"onnxruntime"`` (default): ONNX Runtime on CPU (CUDA provider when present);
* ``"torch"``: the same graph in PyTorch.

PatchCore's graph ends at the patch embeddings; the nearest-neighbour search over the memory bank
runs in FAISS (exact L2, the GPU index when a GPU build is installed) and the image score and map
follow anomalib's formulas. Every backend applies the same normalisation from meta.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ad_core.bundle import Bundle, load_bundle
from ad_core.errors import BundleError
from ad_core.export import graph_kind, onnx_bytes, onnx_metadata, scoring_graph
from ad_core.fileio import load_npz

BACKENDS = ("onnxruntime", "torch")


@dataclass
class ScoreBatch:
    """Scores of a batch: raw and normalised image scores, decisions and maps (model resolution)."""

    raw_score: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    anomaly_map: np.ndarray  # normalised, (B, S, S)
    raw_map: np.ndarray  # raw, (B, S, S)


class PatchcoreSearch:
    """FAISS search of the memory bank plus anomalib's PatchCore image score and anomaly map."""

    def __init__(self, bundle: Bundle) -> None:
        import faiss

        bank = np.ascontiguousarray(load_npz(bundle.path / bundle.meta["memory_bank"])["memory_bank"], np.float32)
        self.bank = torch.from_numpy(bank)
        self.index = faiss.IndexFlatL2(bank.shape[1])
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:  # pragma: no cover - GPU only
            self.index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, self.index)
        self.index.add(bank)
        self.num_neighbors = int(bundle.meta.get("num_neighbors", 9))
        self.map_generator = bundle.model.module.anomaly_map_generator

    def _search(self, queries: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        d2, idx = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return torch.from_numpy(np.sqrt(np.maximum(d2, 0.0))), torch.from_numpy(idx.astype(np.int64))

    def __call__(self, embedding: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)`` from embeddings ``(B, D, h, w)``."""
        b, d, h, w = embedding.shape
        if d != self.bank.shape[1]:
            raise BundleError(f"memory bank width {self.bank.shape[1]} does not match the graph's embedding width {d}")
        flat = embedding.permute(0, 2, 3, 1).reshape(-1, d)
        dist, loc = self._search(flat.numpy(), 1)
        patch_scores, locations = dist.reshape(b, -1), loc.reshape(b, -1)
        if self.num_neighbors == 1:
            score = patch_scores.amax(1)
        else:
            rows = torch.arange(b)
            max_patches = patch_scores.argmax(1)
            max_features = flat.reshape(b, h * w, d)[rows, max_patches]
            nn_sample = self.bank[locations[rows, max_patches]]
            _, support = self._search(nn_sample.numpy(), min(self.num_neighbors, len(self.bank)))
            distances = torch.cdist(max_features.unsqueeze(1), self.bank[support]).squeeze(1)
            weights = (1 - F.softmax(distances, 1))[..., 0]
            score = weights * patch_scores[rows, max_patches]
        anomaly_map = self.map_generator(patch_scores.reshape(b, 1, h, w), (image_size, image_size))
        return score, anomaly_map


class Scorer:
    """Scores images with one backend; see :func:`open_scorer`."""

    def __init__(self, bundle: Bundle, backend: str = "onnxruntime", onnx_path: str | Path | None = None) -> None:
        if backend not in BACKENDS:
            raise BundleError(f"backend {backend!r} is not available here; choose one of {', '.join(BACKENDS)}")
        self.bundle, self.backend = bundle, backend
        self.image_size = int(bundle.meta["image_size"])
        self.preprocess = bundle.preprocess
        self.kind = graph_kind(bundle)
        self.search = PatchcoreSearch(bundle) if self.kind == "embedding" else None
        if backend == "torch":
            self.graph = scoring_graph(bundle)
        else:
            import onnxruntime as ort

            if onnx_path is None:
                model = onnx_bytes(bundle)
            else:
                model = Path(onnx_path).read_bytes()
                self._check_onnx(model, Path(onnx_path))
            providers = [
                p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
            ]
            self.session = ort.InferenceSession(model, providers=providers)

    def _check_onnx(self, model: bytes, path: Path) -> None:
        meta = onnx_metadata(model)
        want = {"model": self.bundle.meta["model"], "image_size": str(self.image_size)}
        got = {k: meta.get(k) for k in want}
        if got != want:
            raise BundleError(
                f"{path} was exported for model {got['model']} at image size {got['image_size']}; this bundle is "
                f"{want['model']} at {want['image_size']}"
            )
        sha = self.bundle.meta.get("sha256", {}).get(self.bundle.meta["weights_pth"])
        if meta.get("weights_sha256") and sha and meta["weights_sha256"] != sha:
            raise BundleError(
                f"{path} was exported from other weights than this bundle's {self.bundle.meta['weights_pth']}"
            )

    def _run_graph(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.backend == "torch":
            with torch.no_grad():
                out = self.graph(batch)
            return out if isinstance(out, tuple) else (out,)
        outs = self.session.run(None, {"image": batch.numpy()})
        return tuple(torch.from_numpy(o) for o in outs)

    def raw(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(B,)`` and raw maps ``(B, S, S)`` of a preprocessed batch."""
        if batch.shape[-1] != self.image_size or batch.shape[-2] != self.image_size:
            raise BundleError(f"input of size {tuple(batch.shape[-2:])}: this model takes {self.image_size} px")
        outs = self._run_graph(batch.float().contiguous())
        if self.search is not None:
            score, amap = self.search(outs[0], self.image_size)
        else:
            score, amap = outs
        return score.reshape(-1).numpy().astype(np.float32), amap[:, 0].numpy().astype(np.float32)

    def __call__(self, images: Sequence[np.ndarray] | torch.Tensor, threshold: float | None = None) -> ScoreBatch:
        """Score RGB uint8 images (any size) or a preprocessed ``(B, 3, S, S)`` tensor."""
        batch = images if isinstance(images, torch.Tensor) else torch.stack([self.preprocess(im) for im in images])
        raw, raw_map = self.raw(batch)
        thr = self.bundle.image_threshold if threshold is None else float(threshold)
        score = np.atleast_1d(self.bundle.normalize(raw))
        return ScoreBatch(raw, score, score >= thr, self.bundle.normalize(raw_map), raw_map)


def open_scorer(
    bundle: Bundle | str | Path, backend: str = "onnxruntime", onnx_path: str | Path | None = None
) -> Scorer:
    """Load (if needed) a bundle and return a scorer on ``backend``.

    Args:
        bundle: a loaded bundle, a run directory or a ``pytorch/`` folder.
        backend: ``"onnxruntime"`` (default) or ``"torch"``.
        onnx_path: an exported ``model.onnx``; checked against the bundle. Without it the graph is
            exported in memory.
    """
    return Scorer(bundle if isinstance(bundle, Bundle) else load_bundle(bundle), backend, onnx_path)
