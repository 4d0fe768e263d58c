"""Exact nearest-neighbour search in a fixed bank, pruned with the triangle inequality where that pays.

PatchCore scores an image by the distance of each of its patch embeddings to the nearest row of the
memory bank (1,024 patches against about 8,000 rows of width 152 at 256 px). A brute-force search
(FAISS ``IndexFlatL2``) computes every one of those distances. :class:`CellIndex` gives the same
neighbours while computing far fewer of them when the bank has structure to exploit:

* At build time the bank is grouped into k-means cells (:func:`kmeans_cells`, the same cells the
  coreset's pruned greedy uses); each cell keeps its centre, and each row its distance to that
  centre.
* Per query, the distances to the ~100 centres are computed first, and the nearest cell is
  scanned first, which gives a close upper bound on the answer; any other cell
  whose ``|q - centre| - radius`` exceeds that bound cannot hold a nearer row and is skipped, and
  inside the cells that remain, any row whose ``| |q - centre| - |row - centre| |`` exceeds it is
  skipped too. On MVTec AD bottle this leaves about 3 % of the distances.
* How much is skipped depends on the data: on the sample textures most rows survive the bounds.
  One direct distance costs several times what it costs inside FAISS's matrix product, so each
  call first scans a strided eighth of its queries; when more than :attr:`CellIndex.pays_below`
  of the bank had to be computed per query, the rest of the call goes to FAISS, and later calls do
  too until a probe every :attr:`CellIndex.reprobe_every` calls says pruning pays again.
* Every distance returned is a direct sum of squared differences in float32 (FAISS's answers are
  recomputed so), more accurate than the ``|q|^2 + |b|^2 - 2 q.b`` expansion of a BLAS search,
  which loses digits for near neighbours (``tests/test_knn.py`` compares both with float64).

The bounds carry a margin for float rounding, so a row is only skipped when it is farther away by
more than the rounding error: the result is the brute-force result, except that of two rows at the
same distance to within rounding either may be returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    import torch

# reassociation lets LLVM vectorise the sums of squares; no-NaN/no-Inf flags are not set because
# the kernel compares against +inf-like sentinels
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _nearest_centre(x: np.ndarray, centres: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centre of each row (``|c|^2 - 2 x.c``: ``|x|^2`` is the same per row), in chunks."""
    c2 = (centres**2).sum(1)
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), chunk):
        d = x[s : s + chunk] @ centres.T
        d *= -2.0
        d += c2
        out[s : s + chunk] = d.argmin(1)
    return out


def _cell_means(x: np.ndarray, assign: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean row of each cell (zero for an empty one) and the cell sizes."""
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=n_cells)
    sums = np.zeros((n_cells, x.shape[1]), np.float64)
    filled = counts > 0
    starts = (np.cumsum(counts) - counts)[filled]
    sums[filled] = np.add.reduceat(x[order], starts, axis=0, dtype=np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts


def kmeans_cells(z: np.ndarray, cell_size: int, seed: int) -> tuple[np.ndarray, ...]:
    """Group rows into about ``len(z) / cell_size`` k-means cells: (order, starts, ends, centres, radii).

    ``z[order]`` lists the rows cell by cell; cell ``c`` holds rows ``starts[c]:ends[c]`` of that order,
    ``centres[c]`` is the mean of its rows and ``radii[c]`` the largest distance of one to it. Empty
    cells are dropped. Six Lloyd iterations on a sample are enough: the cells only need to be compact,
    not optimal (they only decide what the triangle inequality can skip, never a result).
    """
    z = np.ascontiguousarray(z, np.float32)
    n = z.shape[0]
    n_blocks = max(1, n // cell_size)
    rng = np.random.default_rng(seed)
    sample = z[rng.permutation(n)[: min(n, 64 * n_blocks)]]
    centres = sample[rng.permutation(len(sample))[:n_blocks]].copy()
    for _ in range(6):  # Lloyd iterations on a sample
        means, counts = _cell_means(sample, _nearest_centre(sample, centres), n_blocks)
        centres = np.where(counts[:, None] > 1, means, centres)
    assign = _nearest_centre(z, centres)
    exact, counts = _cell_means(z, assign, n_blocks)
    order = np.argsort(assign, kind="stable")
    ends = np.cumsum(counts)
    starts = ends - counts
    keep = counts > 0
    dist = np.sqrt(((z[order] - exact[assign[order]]) ** 2).sum(1))
    radii = np.zeros(n_blocks, np.float32)
    np.maximum.at(radii, assign[order], dist)
    return order, starts[keep].astype(np.int64), ends[keep].astype(np.int64), exact[keep], radii[keep]


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _sq_dist(a, b):  # pragma: no cover - jit
    s = np.float32(0.0)
    for t in range(a.shape[0]):
        diff = a[t] - b[t]
        s += diff * diff
    return s


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _scan_cell(qi, bank, j0, j1, lc, hc, row_r, top_d, top_i, slack):  # pragma: no cover - jit
    """Offer rows ``j0:j1`` of one cell to the query's ``top_d``/``top_i`` (k best, ascending).

    Returns how many row distances were computed.
    """
    k = top_d.shape[0]
    computed = 0
    for j in range(j0, j1):
        gap = max(lc - row_r[j], row_r[j] - hc)  # |q - row| is at least this
        if gap > 0.0 and gap * gap > top_d[k - 1] * slack:
            continue
        computed += 1
        s = _sq_dist(qi, bank[j])
        if s < top_d[k - 1]:  # insert, keeping the k best in ascending order
            m = k - 1
            while m > 0 and top_d[m - 1] > s:
                top_d[m] = top_d[m - 1]
                top_i[m] = top_i[m - 1]
                m -= 1
            top_d[m] = s
            top_i[m] = j
    return computed


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _scan(q, sel, bank, centres, starts, ends, radii, row_r, out_d, out_i, slack, budget):  # pragma: no cover
    """The k nearest rows of ``bank`` for the queries ``q[sel]``, into ``out_d``/``out_i`` ``(n, k)``, ascending.

    Every distance is a float32 sum of squares, within a factor ``slack`` of the exact one; the
    bounds take the pessimistic end of that range, so no row that could be nearer is skipped.
    Stops after the query at which more than ``budget`` row distances have been computed (no limit
    when negative). Returns how many of ``sel`` were done and how many row distances that took.
    """
    k = out_d.shape[1]
    n_cells = starts.shape[0]
    centre_d2 = np.empty(n_cells, np.float64)
    computed = 0
    for done in range(sel.shape[0]):
        if 0 <= budget < computed:
            return done, computed
        i = sel[done]
        qi = q[i]
        top_d = out_d[i]
        top_i = out_i[i]
        top_d[:] = np.inf
        top_i[:] = -1
        for c in range(n_cells):
            centre_d2[c] = _sq_dist(qi, centres[c])
        first = np.argmin(centre_d2)  # the nearest cell first: it gives a tight bound early
        for step in range(n_cells + 1):
            c = first if step == 0 else step - 1
            if step > 0 and c == first:
                continue
            lc = np.sqrt(centre_d2[c] / slack)  # |q - centre| is at least this
            gap = lc - radii[c]
            if gap > 0.0 and gap * gap > top_d[k - 1] * slack:
                continue
            hc = np.sqrt(centre_d2[c] * slack)  # and at most this
            computed += _scan_cell(qi, bank, starts[c], ends[c], lc, hc, row_r, top_d, top_i, slack)
    return sel.shape[0], computed


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _refine(q, sel, bank, out_d, out_i):  # pragma: no cover - jit
    """Recompute the distances of the rows ``out_i`` found for ``q[sel]`` as direct sums; re-sort."""
    k = out_d.shape[1]
    for i in sel:
        for m in range(k):
            out_d[i, m] = _sq_dist(q[i], bank[out_i[i, m]])
        for m in range(1, k):  # insertion sort: FAISS's order may differ by its rounding
            dm, im = out_d[i, m], out_i[i, m]
            j = m
            while j > 0 and out_d[i, j - 1] > dm:
                out_d[i, j], out_i[i, j] = out_d[i, j - 1], out_i[i, j - 1]
                j -= 1
            out_d[i, j], out_i[i, j] = dm, im


def checked_bank(bank: np.ndarray) -> np.ndarray:
    """The bank as a contiguous float32 ``(N, D)`` array, N > 0."""
    bank = np.ascontiguousarray(bank, np.float32)
    if bank.ndim != 2 or bank.shape[0] == 0:
        raise ValueError(f"the bank must be a non-empty (N, D) array, got shape {bank.shape}")
    return bank


def checked_queries(queries: np.ndarray, k: int, ntotal: int, d: int) -> np.ndarray:
    """The queries as contiguous float32 ``(n, d)``, refused with the shapes when they or ``k`` do not fit the bank."""
    q = np.ascontiguousarray(queries, np.float32)
    check_query_shape(q.shape, k, ntotal, d)
    return q


def check_query_shape(shape: tuple, k: int, ntotal: int, d: int) -> None:
    """Refuse queries of ``shape`` that are not ``(n, d)``, or a ``k`` outside ``1..ntotal``, with the shapes."""
    if len(shape) != 2 or shape[1] != d:
        raise ValueError(f"queries of shape {tuple(shape)} do not match a bank of width {d}")
    if not 1 <= k <= ntotal:
        raise ValueError(f"k must be between 1 and the bank size {ntotal}, got {k}")


class CellIndex:
    """Exact k-nearest-neighbour search over a fixed ``(N, D)`` float32 bank (squared L2, like FAISS).

    ``search(queries, k)`` returns ``(squared distances, indices)``, both ``(n, k)``, nearest first,
    with the indices into the bank as given. The pruned scan is single-threaded and GIL-free, so a
    caller's other threads (a ROS executor, ONNX Runtime) keep running; the FAISS fallback uses
    FAISS's threads. ``stats`` counts the queries each path answered.

    Args:
        bank: the ``(N, D)`` rows to search.
        cell_size: average rows per k-means cell.
        seed: seeds the k-means cells.
        fallback: hand a call's queries to FAISS when pruning does not pay (False: always prune).
    """

    pays_below = 0.2
    """Share of the bank computed per query above which FAISS's matrix product is faster (the direct
    distances of the scan cost about 4x FAISS's on a 2-core x86 CPU; this leaves room for that)."""
    reprobe_every = 16
    """While FAISS answers, every this many calls a probe checks whether pruning pays again."""
    probe_stride = 8
    """Every this many queries of a call is in the probe."""

    def __init__(self, bank: np.ndarray, cell_size: int = 64, seed: int = 0, fallback: bool = True) -> None:
        bank = checked_bank(bank)
        self.ntotal, self.d = bank.shape
        order, self.starts, self.ends, centres, _ = kmeans_cells(bank, cell_size, seed)
        self.order = order.astype(np.int64)
        self.rows = np.ascontiguousarray(bank[order])
        self.centres = centres.astype(np.float32)
        cell_of_row = np.repeat(np.arange(len(self.starts)), self.ends - self.starts)
        # distances of rows to their centre in float64, rounded outwards a little
        centres64 = self.centres.astype(np.float64)
        row_r = np.sqrt(((self.rows.astype(np.float64) - centres64[cell_of_row]) ** 2).sum(1))
        self.row_r = row_r * (1 + 1e-7)
        self.radii = np.zeros(len(self.starts))
        np.maximum.at(self.radii, cell_of_row, self.row_r)
        self.fallback = fallback
        self.stats = {"pruned": 0, "faiss": 0}
        self.computed_share = 0.0  # of the bank, per query, in the last probe
        self._faiss = None
        self._faiss_calls = 0  # calls answered by FAISS since the last probe
        # a float32 sum of d squares is within about d * 2**-24 (relative) of the exact one; allow 4x
        self._slack = 1.0 + 4.0 * self.d * 2.0**-24
        self.search(self.rows[:1], 1)  # compile (or load the cached kernel) now, not on the first frame
        self.stats = {"pruned": 0, "faiss": 0}

    @property
    def n_cells(self) -> int:
        """Number of k-means cells the bank is split into."""
        return len(self.starts)

    def _prune(self, q, sel, out_d, out_i, budget: float = -1.0) -> tuple[int, int]:
        args = (self.rows, self.centres, self.starts, self.ends, self.radii, self.row_r, out_d, out_i)
        return _scan(q, sel, *args, self._slack, float(budget))

    def _brute(self, q: np.ndarray, sel: np.ndarray, out_d: np.ndarray, out_i: np.ndarray) -> None:
        if self._faiss is None:
            import faiss

            self._faiss = faiss.IndexFlatL2(self.d)
            self._faiss.add(self.rows)
        _, idx = self._faiss.search(q[sel], out_i.shape[1])
        out_i[sel] = idx
        _refine(q, sel, self.rows, out_d, out_i)
        self.stats["faiss"] += len(sel)

    def probe_share(self, queries: np.ndarray, max_queries: int = 512) -> float:
        """Share of the bank the pruned scan computes per query for (a strided sample of) ``queries``.

        Above :attr:`pays_below`, :meth:`search` hands such queries to FAISS's brute force. The scan
        stops early once it is past that budget, so the answer is then only known to exceed it.
        """
        q = np.ascontiguousarray(queries, np.float32)
        sel = np.arange(0, len(q), max(1, len(q) // max_queries))
        out_d = np.empty((len(q), 1), np.float32)
        out_i = np.empty((len(q), 1), np.int64)
        budget = 2 * self.pays_below * len(sel) * self.ntotal
        done, computed = self._prune(q, sel, out_d, out_i, budget)
        return computed / (max(done, 1) * self.ntotal)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and bank indices of the ``k`` nearest rows of each query, ``(n, k)`` each."""
        q = checked_queries(queries, k, self.ntotal, self.d)
        n = len(q)
        out_d = np.empty((n, k), np.float32)
        out_i = np.empty((n, k), np.int64)
        everything = np.arange(n)
        if not self.fallback or n < 8 * self.probe_stride:  # a few queries: the scan is cheap either way
            self._prune(q, everything, out_d, out_i)
            self.stats["pruned"] += n
            return out_d, self.order[out_i]
        if self._faiss_calls and self._faiss_calls < self.reprobe_every:
            self._faiss_calls += 1
            self._brute(q, everything, out_d, out_i)
            return out_d, self.order[out_i]
        probe = everything[:: self.probe_stride]  # strided: spread over the image, not its top rows
        budget = self.pays_below * len(probe) * self.ntotal
        done, computed = self._prune(q, probe, out_d, out_i, budget)
        self.computed_share = computed / (max(done, 1) * self.ntotal)
        self.stats["pruned"] += done
        rest = np.concatenate([probe[done:], np.delete(everything, probe)])
        if done == len(probe) and computed <= budget:
            self._faiss_calls = 0
            self._prune(q, rest, out_d, out_i)
            self.stats["pruned"] += len(rest)
        else:
            self._faiss_calls = 1
            self._brute(q, rest, out_d, out_i)
        return out_d, self.order[out_i]


class TorchIndex:
    """Exact k-nearest-neighbour search on a torch device: the bank lives there, one matrix product per call.

    For the torch scorer on a GPU (training, calibration and ``test`` on a PC): :class:`CellIndex`
    would search on the host, several times slower than the model's own forward pass there (an H200
    took 18 ms a frame against anomalib's 4.4 ms). Candidates come from the ``|q|^2 + |b|^2 - 2 q.b``
    expansion in IEEE fp32 (no TF32), a few more than asked for; their distances are then recomputed
    directly, as :class:`CellIndex` does, and the nearest ``k`` of those are returned. Same
    ``search(queries, k) -> (squared distances, indices)`` as FAISS and :class:`CellIndex`.

    Args:
        bank: the ``(N, D)`` rows to search.
        device: a torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        spare: extra candidates re-ranked by their direct distance (near ties of the expansion).
        chunk: matrix elements computed at once (bounds the memory a large batch takes).
    """

    def __init__(self, bank: np.ndarray, device: str = "cuda", spare: int = 8, chunk: int = 2**26) -> None:
        import torch

        bank = checked_bank(bank)
        self.ntotal, self.d = bank.shape
        self.device = torch.device(device)
        self.bank = torch.from_numpy(bank).to(self.device)
        self.norms = (self.bank * self.bank).sum(1)
        self.spare, self.rows_at_once = int(spare), max(1, int(chunk) // self.ntotal)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and indices ``(n, k)`` of each query's ``k`` nearest rows, nearest first."""
        import torch

        q = torch.from_numpy(checked_queries(queries, k, self.ntotal, self.d))
        d2, idx = self.search_tensor(q, k)
        return d2.cpu().numpy(), idx.cpu().numpy().astype(np.int64)

    def search_tensor(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`search` for a float32 ``(n, D)`` tensor: the answer stays on the bank's device (no copies)."""
        import torch

        from ad_core.runners import ieee_fp32

        check_query_shape(tuple(queries.shape), k, self.ntotal, self.d)
        q = queries.to(self.device, torch.float32)
        wide = min(self.ntotal, k + self.spare)
        out_d, out_i = [], []
        with torch.no_grad(), ieee_fp32():
            for s in range(0, len(q), self.rows_at_once):
                x = q[s : s + self.rows_at_once]
                approx = torch.addmm(self.norms[None, :], x, self.bank.T, alpha=-2.0)
                cand = approx.topk(wide, dim=1, largest=False).indices
                exact = ((self.bank[cand] - x[:, None, :]) ** 2).sum(-1)
                d2, pick = exact.topk(k, dim=1, largest=False)
                out_d.append(d2)
                out_i.append(cand.gather(1, pick))
        return torch.cat(out_d), torch.cat(out_i)
