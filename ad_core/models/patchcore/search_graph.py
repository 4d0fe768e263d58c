"""PatchCore's bank search as a graph of its own, ``search.onnx`` (and ``search.plan``) beside the engine.

A Jetson has no FAISS for its GPU on the package index, so the deployed head searched the bank on
the ARM cores. ``convtrt`` now also exports the search itself: the bank is a constant of a small graph
that takes the (whitened) patch embeddings ``queries (n, D)`` and returns, for each, the ``k``
nearest rows' squared distances ``distances (n, k)`` and indices ``indices (n, k)`` (float32: exact
below 2**24 rows, and every runner reads float32), nearest first. It is
:class:`ad_core.models.patchcore.knn.TorchIndex`'s algorithm: candidates from the
``|b|^2 - 2 q.b`` expansion (TopK of ``k + spare``), then their distances recomputed directly, so a
query next to a bank row is ranked and measured as exactly as the CPU's search does.

TensorRT builds ``search.plan`` from it in fp32 (also for an ``--fp16`` model engine: distances of
long vectors lose their digits in fp16), and the head runs it with :class:`GraphIndex` where the
model's graph runs on TensorRT (``bank_search`` ``auto``) or when asked (``"engine"``, ONNX Runtime
otherwise). The model graph itself stays bank-free: a retrain that grows the bank rebuilds only
these two files' constants, and the engine's precision choices do not touch the search.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

SEARCH_INPUT = "queries"
SEARCH_OUTPUTS = ("distances", "indices")
SPARE = 8  # candidates beyond k re-ranked by their direct distance (TorchIndex's default)
MAX_BANK_BYTES = 900 << 20  # the graph holds the bank twice; an ONNX protobuf ends at 2 GB


def search_graph_bytes(bank: np.ndarray, k: int, opset: int = 17) -> bytes:
    """The ONNX graph of an exact ``k``-nearest-neighbour search of ``bank`` (constant), checked by ``onnx.checker``."""
    import onnx
    import torch
    from torch import nn

    bank = np.ascontiguousarray(bank, np.float32)
    n_rows, width = bank.shape
    if n_rows >= 2**24:
        raise ValueError(f"a bank of {n_rows} rows: the search graph's float32 indices are exact below 2**24 rows")
    k = max(1, min(int(k), n_rows))
    wide = min(n_rows, k + SPARE)

    class BankSearch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            rows = torch.from_numpy(bank.copy())
            self.register_buffer("bank", rows)
            self.register_buffer("norms", (rows.double() ** 2).sum(1).float())

        def forward(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            approx = self.norms[None, :] - 2.0 * (queries @ self.bank.T)  # |q|^2 is the same along a row
            cand = torch.topk(approx, wide, dim=1, largest=False).indices
            exact = ((self.bank[cand] - queries[:, None, :]) ** 2).sum(-1)
            d2, pick = torch.topk(exact, k, dim=1, largest=False)
            return d2, torch.gather(cand, 1, pick).float()

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            BankSearch().eval(),
            (torch.zeros(4, width),),
            buf,
            opset_version=opset,
            input_names=[SEARCH_INPUT],
            output_names=list(SEARCH_OUTPUTS),
            dynamic_axes={SEARCH_INPUT: {0: "n"}, **{name: {0: "n"} for name in SEARCH_OUTPUTS}},
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    for key, value in {"graph": "bank_search", "rows": n_rows, "width": width, "k": k}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"ad_inspect.{key}", str(value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class GraphIndex:
    """:func:`search_graph_bytes`'s graph run by a runner (TensorRT or ONNX Runtime); FAISS's ``search`` API.

    Args:
        runner: runs the graph: ``runner(queries) -> [distances, indices]``.
        ntotal, d: the bank's rows and width (the graph's constant).
        k: the most neighbours the graph returns.
        max_queries: the most queries one call may take (a TensorRT profile's limit; 0: any).
    """

    def __init__(self, runner: Any, ntotal: int, d: int, k: int, max_queries: int = 0) -> None:
        self.runner, self.ntotal, self.d, self.k = runner, int(ntotal), int(d), int(k)
        self.max_queries = int(max_queries)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and indices ``(n, k)`` of each query's ``k`` nearest rows, nearest first."""
        from ad_core.models.patchcore.knn import checked_queries

        q = checked_queries(queries, k, self.ntotal, self.d)
        if k > self.k:
            raise ValueError(f"k={k}: this search graph returns at most {self.k} neighbours (re-export it)")
        step = self.max_queries or len(q)
        parts = [self.runner(q[s : s + step]) for s in range(0, len(q), step)]
        d2 = np.concatenate([np.asarray(p[0], np.float32)[:, :k] for p in parts])
        idx = np.concatenate([np.asarray(p[1])[:, :k] for p in parts])
        return d2, np.rint(idx).astype(np.int64)
