"""PatchCore's deployed head: exact search of the memory bank, then anomalib's image score and map.

It runs after the embedding graph on every backend (torch while training and testing, ONNX
Runtime, OpenVINO, TensorRT once deployed), in numpy and scipy on the calling thread: torch's,
OpenBLAS's and FAISS's worker threads busy-wait for milliseconds after each call and would take
the other cores from the rest of the frame.

``bank_search``: ``"auto"`` (default) uses FAISS's GPU index where a GPU build of FAISS sees a GPU,
and otherwise :class:`ad_core.models.patchcore.knn.CellIndex`, an exact search that skips the bank
rows the triangle inequality rules out and hands calls where that does not pay to FAISS (same
neighbours as brute force); ``"cells"`` forces that one; ``"faiss"`` forces FAISS's ``IndexFlatL2``
(GPU index when possible); ``"torch"`` keeps the bank on a torch device (the GPU where there is one,
or ``"torch:cuda:1"``) and searches there (:class:`ad_core.models.patchcore.knn.TorchIndex`);
``"engine"`` runs the search graph ``convtrt`` writes beside an engine (``search.plan`` with TensorRT,
else ``search.onnx`` with ONNX Runtime; :mod:`ad_core.models.patchcore.search_graph`), which ``auto``
picks where the model's graph runs on TensorRT: a Jetson searches on its GPU, without FAISS. The
torch scorer of a model on a GPU uses that one (:meth:`ad_core.runtime.Scorer.for_model`) and then
takes the graph's embeddings as they are, on that device (``takes_tensors``): whitening, search,
re-weighting and the map's resize and blur run there, and only the scores and the map come to the host
(the same float32 operators as the numpy path). The deployed path never imports torch for it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.errors import BundleError
from ad_core.filters import nearest_resize_blur
from ad_core.graph_io import EMBEDDING_OUTPUT

BANK_SEARCHES = ("auto", "cells", "faiss", "torch", "engine")


@functools.cache
def _blas_controller():
    """The loaded BLAS libraries, as threadpoolctl sees them (built once: it scans the process)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class PatchcoreHead:
    """Memory-bank search plus anomalib's PatchCore re-weighted image score and blurred map."""

    uses_arrays = True

    def __init__(
        self,
        bank: np.ndarray,
        num_neighbors: int = 9,
        source: str | Path = "memory_bank.npz",
        engine: str = "auto",
        whitening: np.ndarray | None = None,
        index: Any = None,
    ) -> None:
        engine, _, torch_device = engine.partition(":")
        if engine not in BANK_SEARCHES:
            raise BundleError(f"bank search {engine!r}: choose one of {', '.join(BANK_SEARCHES)}")
        bank = np.ascontiguousarray(bank, np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0 or not np.isfinite(bank).all():
            raise BundleError(f"{source}: the memory bank must be a finite (N, D) array with N > 0, got {bank.shape}")
        self.source = source
        self.bank = bank
        self.whitening = None
        if whitening is not None:
            whitening = np.ascontiguousarray(whitening, np.float32)
            if whitening.shape != (bank.shape[1], bank.shape[1]) or not np.isfinite(whitening).all():
                raise BundleError(
                    f"{source}: 'whitening' must be a finite ({bank.shape[1]}, {bank.shape[1]}) array to match "
                    f"the memory bank's width, got {whitening.shape}"
                )
            self.whitening = whitening
        self.num_neighbors = int(num_neighbors)
        self.on_gpu = False
        self.takes_tensors = False  # True: __call__ is handed the torch graph's output on the bank's device
        self.timings: dict[str, float] = {"bank_search": 0.0}
        if index is not None:  # the search graph beside an engine (GraphIndex), opened by ``open``
            self.index, self.engine = index, f"engine-{index.runner.backend}"
            self.on_gpu = index.runner.backend == "tensorrt"
            return
        if engine == "engine":
            raise BundleError(
                f"{source}: bank search 'engine' runs the search graph that `ad-core convtrt` writes beside an engine "
                f"(search.onnx, search.plan); open the engine folder, or choose one of auto, cells, faiss, torch"
            )
        if engine == "torch":
            import torch

            from ad_core.models.patchcore.knn import TorchIndex

            torch_device = torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.index, self.engine = TorchIndex(bank, torch_device), f"torch-{torch.device(torch_device).type}"
            self.on_gpu = self.index.device.type == "cuda"
            self.takes_tensors = True
            self._whitening_t = (
                None if self.whitening is None else torch.from_numpy(self.whitening).to(self.index.device)
            )
            return
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
        from ad_core.models.patchcore.knn import CellIndex

        self.index, self.engine = CellIndex(bank), "cells"

    @classmethod
    def open(
        cls,
        meta: dict[str, Any],
        arrays: dict[str, np.ndarray] | None,
        source: str | Path,
        bank_search: str = "auto",
        folder: str | Path | None = None,
        backend: str | None = None,
    ) -> PatchcoreHead:
        """The head for a bundle: its ``memory_bank`` (and ``whitening``) arrays and meta.json's ``num_neighbors``.

        ``folder`` and ``backend``: where the bundle's files are and what runs its graph. An engine
        folder's search graph is used for ``bank_search`` ``"engine"``, and for ``"auto"`` where the
        graph runs on TensorRT.
        """
        if arrays is None:
            raise BundleError(f"{source}: PatchCore needs its memory_bank.npz (-m / --memory_bank)")
        if "memory_bank" not in arrays:
            raise BundleError(f"{source}: no array named 'memory_bank' inside")
        bank, k = arrays["memory_bank"], int(meta.get("num_neighbors", 9))
        index = None
        wanted = bank_search == "engine" or (bank_search == "auto" and backend == "tensorrt")
        if wanted and folder is not None and (meta.get("engine") or {}).get("search_onnx"):
            index = _search_graph_index(meta, Path(folder), bank, backend, source, required=bank_search == "engine")
        return cls(bank, k, source, bank_search, arrays.get("whitening"), index=index)

    @staticmethod
    def search_graph(arrays: dict[str, np.ndarray], meta: dict[str, Any], opset: int = 17) -> tuple[bytes | None, dict]:
        """``convtrt``'s ``search.onnx`` for this bank, and what meta.json's ``engine`` records of it.

        None (and why) for a bank the graph cannot hold: it keeps the bank twice (for the product and
        for the direct distances), and an ONNX file ends at 2 GB.
        """
        from ad_core.models.patchcore.search_graph import MAX_BANK_BYTES, search_graph_bytes

        bank = np.ascontiguousarray(arrays["memory_bank"], np.float32)
        if bank.nbytes > MAX_BANK_BYTES or len(bank) >= 2**24:
            why = f"a bank of {bank.shape[0]} x {bank.shape[1]} is too large for one ONNX graph"
            return None, {"search_onnx": None, "search_skipped": why}
        k = max(1, min(int(meta.get("num_neighbors", 9)), len(bank)))
        info = {"search_k": k, "search_rows": int(bank.shape[0]), "search_width": int(bank.shape[1])}
        return search_graph_bytes(bank, k, opset), {**info, "search_bank_digest": bank_digest(bank)}

    @property
    def width(self) -> int:
        """Embedding width D the bank was built for."""
        return int(self.bank.shape[1])

    @property
    def search_ms(self) -> float:
        """The last call's search and image score, without the map (ms)."""
        return self.timings["bank_search"]

    def check(self, output_shapes: dict[str, list], source: str | Path) -> None:
        """Refuse a graph whose embedding width differs from the bank's."""
        shape = output_shapes.get(EMBEDDING_OUTPUT) or []
        width = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
        if width is not None and width != self.width:
            raise BundleError(
                f"{self.source}: memory bank rows have width {self.width}, but the graph {source} produces "
                f"embeddings of width {width}: the bank belongs to another backbone or layer set"
            )

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d2, idx = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return np.sqrt(np.maximum(d2, 0.0)), idx.astype(np.int64)

    def __call__(self, outputs: list[np.ndarray], image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(B,)`` and maps ``(B, 1, S, S)`` from the graph's embeddings ``(B, D, h, w)``."""
        if self.takes_tensors and not isinstance(outputs[0], np.ndarray):
            return self._on_device(outputs[0], image_size)
        embedding = np.asarray(outputs[0], np.float32)
        b, d, h, w = embedding.shape
        if d != self.width:
            raise BundleError(
                f"{self.source}: memory bank width {self.width} does not match the graph's embedding width {d}"
            )
        start = time.perf_counter()
        flat = np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, d))
        if self.whitening is not None:  # the bank's rows were whitened the same way (``whiten``)
            # on one BLAS thread: OpenBLAS's idle workers would spin through the search that follows
            # and take its cores (a 2-core CPU searched at half speed: bench/bench_knn.py)
            with _blas_controller().limit(limits=1, user_api="blas"):
                flat = flat @ self.whitening
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
        self.timings["bank_search"] = (time.perf_counter() - start) * 1000.0
        with _blas_controller().limit(limits=1, user_api="blas"):  # no spinning BLAS workers after the frame
            anomaly_map = nearest_resize_blur(patch_scores.reshape(b, 1, h, w), image_size)
        return score.astype(np.float32), anomaly_map

    def _on_device(self, embedding: Any, image_size: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` for a torch tensor: every step on the bank's device, in IEEE fp32."""
        import torch

        from ad_core.filters import resize_blur
        from ad_core.runners import ieee_fp32

        index = self.index
        b, d, h, w = embedding.shape
        if d != self.width:
            raise BundleError(
                f"{self.source}: memory bank width {self.width} does not match the graph's embedding width {d}"
            )
        start = time.perf_counter()
        with torch.no_grad(), ieee_fp32():
            flat = embedding.to(index.device, torch.float32).permute(0, 2, 3, 1).reshape(-1, d)
            if self._whitening_t is not None:
                flat = flat @ self._whitening_t
            d2, loc = index.search_tensor(flat, 1)
            patch_scores, locations = d2.clamp_min(0.0).sqrt().reshape(b, h * w), loc.reshape(b, h * w)
            rows = torch.arange(b, device=index.device)
            max_patches = patch_scores.argmax(1)
            score = patch_scores[rows, max_patches]
            if self.num_neighbors > 1:  # anomalib's re-weighting, as in __call__
                max_features = flat.reshape(b, h * w, d)[rows, max_patches]
                nn_sample = index.bank[locations[rows, max_patches]]
                _, support = index.search_tensor(nn_sample, min(self.num_neighbors, index.ntotal))
                distances = ((index.bank[support] - max_features[:, None, :]) ** 2).sum(-1).sqrt()
                softmax = (distances - distances.max(1, keepdim=True).values).exp()
                score = (1.0 - softmax[:, 0] / softmax.sum(1)) * score
            score = score.cpu().numpy()  # waits for the device: the timing below is the search's
            self.timings["bank_search"] = (time.perf_counter() - start) * 1000.0
            anomaly_map = resize_blur(patch_scores.reshape(b, 1, h, w), (image_size, image_size), 4.0, "nearest")
            return score.astype(np.float32), anomaly_map.cpu().numpy()


def bank_digest(bank: np.ndarray) -> str:
    """A short sha256 of the bank's float32 rows: ties a search graph to the bank it holds."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(bank, np.float32).tobytes()).hexdigest()[:16]


def _search_graph_index(
    meta: dict[str, Any], folder: Path, bank: np.ndarray, backend: str | None, source: str | Path, required: bool
) -> Any:
    """The engine folder's search graph as an index: ``search.plan`` beside a TensorRT graph, else ``search.onnx``.

    Checked before use: the file's sha256 against meta.json, the bank it holds against ``bank`` (a
    ``--memory_bank`` from elsewhere), and a search for a few of the bank's own rows, which must find
    them. Where ``auto`` chose it, a failed check falls back to the CPU's search with a warning;
    ``required`` (``bank_search="engine"``) raises instead.
    """
    import warnings

    from ad_core.fileio import sha256
    from ad_core.models.patchcore.search_graph import SEARCH_INPUT, SEARCH_OUTPUTS, GraphIndex

    info = meta["engine"]
    name = info.get("search_plan") if backend == "tensorrt" and info.get("search_plan") else info["search_onnx"]
    path = folder / name
    try:
        if not path.is_file():
            raise BundleError(f"{path}: the search graph meta.json names is missing; re-run `ad-core convtrt`")
        expected = (meta.get("sha256") or {}).get(name)
        if expected and sha256(path) != expected:
            raise BundleError(f"{path} does not match the sha256 in meta.json: it belongs to another export")
        if info.get("search_bank_digest") != bank_digest(bank):
            raise BundleError(
                f"{path} searches another memory bank than {source} (a --memory_bank from elsewhere, or a retrain "
                f"since the export): re-run `ad-core convtrt` for this bank"
            )
        data = path.read_bytes()
        if name.endswith(".plan"):
            from ad_core.runners import TrtRunner

            runner, limit = TrtRunner(data, path, input_name=SEARCH_INPUT), int(info.get("search_max_queries", 0))
        else:
            from ad_core.runners import OrtRunner

            runner, limit = OrtRunner(data), 0
        if runner.output_names != list(SEARCH_OUTPUTS):
            raise BundleError(f"{path}: outputs {runner.output_names}, a search graph outputs {list(SEARCH_OUTPUTS)}")
        index = GraphIndex(runner, int(info["search_rows"]), int(info["search_width"]), int(info["search_k"]), limit)
        probe = np.ascontiguousarray(bank[:: max(1, len(bank) // 8)][:8], np.float32)
        d2, _ = index.search(probe, 1)
        if not np.all(d2[:, 0] <= 1e-4 * np.maximum((probe.astype(np.float64) ** 2).sum(1), 1e-12)):
            raise BundleError(f"{path}: the search graph does not find the bank's own rows (distances {d2[:, 0]})")
        return index
    except Exception as exc:  # auto on a Jetson: whatever went wrong, the CPU's search still scores the frames
        if required:
            raise
        warnings.warn(f"{exc}; searching the bank on the CPU instead", stacklevel=3)
        return None
