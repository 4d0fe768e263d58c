"""Fast k-center greedy coreset selection for PatchCore's memory bank.

The same selection rule as anomalib's ``KCenterGreedy`` (farthest-point greedy after a random
projection), computed much faster on CPU:

* The projection goes to a fixed width (``proj_dim``, default 128) rather than the
  Johnson-Lindenstrauss width for eps=0.9, so the working set stays cache-sized.
* Exact pruning with the triangle inequality: points are grouped into blocks (k-means cells),
  each with a centre and a radius. A new coreset centre ``c`` can lower the distance of a point
  in block ``b`` only if ``|c - centre_b| - radius_b`` is below the block's current largest
  distance; most blocks fail that test once the coreset grows, and are skipped. The selected
  indices are those of the plain greedy on the same projected features (up to float rounding).
* The loop is compiled with numba; each step touches only the blocks that can change.

``k_center_greedy_plain`` is the straightforward vectorised version, kept as the reference.
``bench/bench_patchcore.py`` measures both against anomalib on the same embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numba import njit

from ad_core.models.patchcore.knn import kmeans_cells


def random_projection(x: torch.Tensor, proj_dim: int, seed: int = 0) -> torch.Tensor:
    """Project rows of ``x`` to ``proj_dim`` dimensions with a Gaussian matrix (no-op if narrower)."""
    if x.shape[1] <= proj_dim:
        return x.float().contiguous()
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same matrix on every device
    matrix = torch.randn(x.shape[1], proj_dim, generator=gen) / proj_dim**0.5
    return (x.float() @ matrix.to(x.device)).contiguous()


def _first_index(n: int, seed: int) -> int:
    return int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))


@torch.no_grad()
def k_center_greedy_plain(
    x: torch.Tensor, k: int, proj_dim: int = 128, seed: int = 0, existing: torch.Tensor | None = None
) -> torch.Tensor:
    """One matrix-vector product per selected point, on ``x``'s device (the CUDA path, and the reference)."""
    n = x.shape[0]
    z = random_projection(x, proj_dim, seed)
    sq = (z * z).sum(1)
    selected = torch.empty(k, dtype=torch.long, device=x.device)
    if existing is None:
        idx = torch.tensor(_first_index(n, seed), device=x.device)
        min_d = torch.full((n,), float("inf"), device=x.device)
    else:
        min_d = torch.cdist(z, random_projection(existing, proj_dim, seed)).amin(1) ** 2
        idx = torch.argmax(min_d)
    dist = torch.empty(n, device=x.device)
    for i in range(k):  # the index stays a device tensor: no host round trip per step on a GPU
        selected[i] = idx
        torch.mv(z, z[idx], out=dist)
        dist.mul_(-2.0).add_(sq).add_(sq[idx])
        torch.minimum(min_d, dist, out=min_d)
        min_d[idx] = 0.0
        idx = torch.argmax(min_d)
    return selected.cpu()


@njit(cache=True, fastmath=False)
def _greedy_pruned(z, sq, first, k, starts, ends, centres, radii, selected, min_d):  # pragma: no cover - jit
    d = z.shape[1]
    n_blocks = starts.shape[0]
    block_max = np.empty(n_blocks, dtype=np.float32)
    block_arg = starts.copy()
    for b in range(n_blocks):  # start from the given distances (inf, or distance to an existing bank)
        best = -1.0
        for j in range(starts[b], ends[b]):
            if min_d[j] > best:
                best = min_d[j]
                block_arg[b] = j
        block_max[b] = best
    idx = first
    for i in range(k):
        selected[i] = idx
        min_d[idx] = 0.0
        c = z[idx]
        csq = sq[idx]
        for b in range(n_blocks):
            dc = 0.0
            for t in range(d):
                diff = c[t] - centres[b, t]
                dc += diff * diff
            lower = np.sqrt(dc) - radii[b]
            if lower > 0.0 and lower * lower > block_max[b] * 1.0001 + 1e-12:
                continue
            best = -1.0
            best_j = starts[b]
            for j in range(starts[b], ends[b]):
                dot = 0.0
                for t in range(d):
                    dot += z[j, t] * c[t]
                dist = sq[j] - 2.0 * dot + csq
                if dist < min_d[j]:
                    min_d[j] = dist
                if min_d[j] > best:
                    best = min_d[j]
                    best_j = j
            block_max[b] = best
            block_arg[b] = best_j
        idx = block_arg[np.argmax(block_max)]


def _nearest_sq_dist(z: torch.Tensor, existing: torch.Tensor) -> np.ndarray:
    """Squared distance of each row of ``z`` to its nearest row of ``existing`` (exact, FAISS)."""
    import faiss

    index = faiss.IndexFlatL2(existing.shape[1])
    index.add(np.ascontiguousarray(existing.numpy(), np.float32))
    d2, _ = index.search(np.ascontiguousarray(z.numpy(), np.float32), 1)
    return np.maximum(d2[:, 0], 0.0).astype(np.float32)


@torch.no_grad()
def k_center_greedy(
    x: torch.Tensor,
    k: int,
    proj_dim: int = 128,
    seed: int = 0,
    block_size: int = 256,
    existing: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Indices of ``k`` rows of ``x`` chosen by greedy farthest-point selection.

    Args:
        x: ``(n, d)`` embeddings.
        k: number of rows to select (1 <= k <= n).
        proj_dim: width of the random projection the distances are computed in.
        seed: seeds the projection, the blocks and the first centre.
        block_size: average number of points per pruning block.
        existing: ``(m, d)`` centres already chosen (an existing memory bank). The greedy then
            continues from them: the first pick is the row of ``x`` farthest from ``existing``, as
            if ``existing`` had been selected first (used to extend a bank when retraining).
        progress: called as ``progress(picked, k)`` between chunks of about 2 % of the picks (a panel's
            bar; it may raise to stop). The greedy continues exactly where a chunk ended: the same picks.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"coreset size must be between 1 and {n}, got {k}")
    z = random_projection(x.cpu(), proj_dim, seed)
    order, starts, ends, centres, radii = kmeans_cells(z.numpy(), block_size, seed)
    zs = np.ascontiguousarray(z.numpy()[order])
    sq = (zs**2).sum(1)
    if existing is None:
        min_d = np.full(n, np.inf, dtype=np.float32)
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        first = int(position[_first_index(n, seed)])
    else:
        if existing.ndim != 2 or existing.shape[1] != x.shape[1]:
            raise ValueError(
                f"existing centres of shape {tuple(existing.shape)} do not match rows of width {x.shape[1]}"
            )
        min_d = _nearest_sq_dist(torch.from_numpy(zs), random_projection(existing.cpu(), proj_dim, seed))
        first = int(np.argmax(min_d))
    selected = np.empty(k, dtype=np.int64)
    chunk = k if progress is None else max(1, -(-k // 50))
    done = 0
    while done < k:
        n = min(chunk, k - done)
        _greedy_pruned(zs, sq, first, n, starts, ends, centres, radii, selected[done : done + n], min_d)
        done += n
        first = int(np.argmax(min_d))  # the next pick, as the greedy's own loop would make it
        if progress is not None:
            progress(done, k)
    return torch.from_numpy(order[selected])
