"""PatchCore's memory-bank search on CPU: ad_core.models.patchcore.knn.CellIndex against FAISS and anomalib, same queries.

For each data set, a PatchCore model is trained (256 px, bundled EfficientNet-Lite0, ``blocks.2
blocks.4``, coreset ratio 0.1) and the test images' patch embeddings (1,024 per image) are searched
against its bank, one image per call as a camera delivers them, by:

* ``cells (auto)``: :class:`ad_core.models.patchcore.knn.CellIndex` as the runtime uses it (pruned scan, FAISS when a
  probe says pruning does not pay);
* ``cells (pruned only)``: the same with the fallback off;
* ``faiss``: FAISS's brute-force ``IndexFlatL2`` (what the runtime used before; OpenMP threads);
* ``anomalib``: anomalib's ``PatchcoreModel.nearest_neighbors`` (torch matrix product and ``min``);
* ``search graph``: convtrt's ``search.onnx`` (the bank a constant; what ``search.plan`` runs on a
  Jetson's GPU), run here by ONNX Runtime on the CPU: its exactness on a real bank, and its CPU cost.

Where the trained bank is whitened (``whiten_mode`` auto chose it: the sample brick), the queries are
whitened too, and two more paths time the head's sequence, the whitening product then the auto
search: ``whiten (1 BLAS thread)`` as shipped, and ``whiten (all BLAS threads)``, where OpenBLAS's idle
workers spin through the search that follows.

Every path is timed on every image in turn (interleaved), median reported; the script also prints
how much of the bank the pruned scan computed per query, and each path's largest relative error of
the nearest squared distance against float64 brute force.

Data: MVTec AD bottle (80 training images) from ``../shared/data`` when present, and the bundled
sample textures (``Sample_brick``), where the bounds prune little.

Usage: ``python bench/bench_knn.py [--rounds 3]``; writes ``bench/results/knn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MVTEC = ROOT.parent / "shared" / "data" / "mvtec_ad"


def _datasets(tmp: Path) -> list[tuple[str, Path, str, list[Path]]]:
    from ad_core.data.images import list_images
    from ad_core.data.sample import build_sample_dataset

    out = []
    if (MVTEC / "bottle").is_dir():
        folder = tmp / "bottle" / "train" / "Bench_bottle"
        folder.mkdir(parents=True)
        for p in list_images(MVTEC / "bottle" / "train" / "good")[:80]:
            os.symlink(p.resolve(), folder / p.name)
        test = sorted(p for d in (MVTEC / "bottle" / "test").iterdir() for p in list_images(d))
        out.append(("MVTec bottle", tmp / "bottle", "Bench_bottle", test[::3]))
    build_sample_dataset(tmp / "sample")
    test = sorted((tmp / "sample" / "test" / "Sample_brick").glob("*/*.png"))
    out.append(("sample brick", tmp / "sample", "Sample_brick", test))
    return out


def bench_data(name: str, root: Path, category: str, test: list[Path], models: Path, rounds: int) -> dict:
    import faiss
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from ad_core import load_bundle, train
    from ad_core.data.images import read_image
    from ad_core.models.patchcore.knn import CellIndex
    from ad_core.runtime import open_scorer

    run = train("patchcore", category, root, models, image_size=256, coreset_ratio=0.1, progress=False)
    scorer = open_scorer(load_bundle(run))
    bank = scorer.search.bank
    queries = []
    raw = []
    for path in test:
        emb = scorer.runner(np.stack([scorer.preprocess.array(read_image(path))]))[0]
        raw.append(np.ascontiguousarray(emb.transpose(0, 2, 3, 1).reshape(-1, emb.shape[1])))
    w = scorer.search.whitening
    queries = raw if w is None else [q @ w for q in raw]

    auto, pruned = CellIndex(bank), CellIndex(bank, fallback=False)
    flat = faiss.IndexFlatL2(bank.shape[1])
    flat.add(bank)
    anomalib = PatchcoreModel(layers=["blocks.2", "blocks.4"], backbone="tf_efficientnet_lite0", pre_trained=False)
    anomalib.memory_bank = torch.from_numpy(bank)

    def anomalib_search(q):
        with torch.no_grad():
            d, i = anomalib.nearest_neighbors(torch.from_numpy(q), 1)
        return (d**2).numpy()[:, None], i.numpy()[:, None]

    from ad_core.models.patchcore.search_graph import GraphIndex, search_graph_bytes
    from ad_core.runners import OrtRunner

    graph = GraphIndex(OrtRunner(search_graph_bytes(bank, 9)), *bank.shape, 9)
    paths = {
        "cells_auto": lambda q: auto.search(q, 1),
        "cells_pruned_only": lambda q: pruned.search(q, 1),
        "faiss": lambda q: flat.search(q, 1),
        "anomalib": anomalib_search,
        "search_graph_ort": lambda q: graph.search(q, 1),
    }
    timed = dict(paths)
    if w is not None:
        from ad_core.models.patchcore.head import _blas_controller

        def one_thread(q):
            with _blas_controller().limit(limits=1, user_api="blas"):
                z = q @ w
            return auto.search(z, 1)

        timed["whiten_1_thread"] = one_thread
        timed["whiten_all_threads"] = lambda q: auto.search(q @ w, 1)
    times: dict[str, list[float]] = {k: [] for k in timed}
    for _ in range(rounds):
        for q, r in zip(queries, raw, strict=True):
            for k, fn in timed.items():
                time.sleep(0.02)  # the previous path's idle BLAS / OpenMP workers stop spinning first
                start = time.perf_counter()
                fn(r if k.startswith("whiten") else q)
                times[k].append((time.perf_counter() - start) * 1000)
                if k == "whiten_all_threads":  # OpenBLAS's workers spin up to 2^28 cycles (~0.1 s) after it
                    time.sleep(0.3)
    errors = dict.fromkeys(paths, 0.0)
    b64 = bank.astype(np.float64)
    for q in queries[:: max(1, len(queries) // 4)]:
        ref = ((q.astype(np.float64)[:, None, :] - b64[None]) ** 2).sum(-1).min(1)
        for k, fn in paths.items():
            got = fn(q)[0][:, 0]
            errors[k] = max(errors[k], float((np.abs(got - ref) / np.maximum(ref, 1e-12)).max()))
    shares = []
    for q in queries:
        _, computed = pruned._prune(q, np.arange(len(q)), *_outputs(len(q)))
        shares.append(computed / (len(q) * len(bank)))
    return {
        "data": name,
        "bank": list(bank.shape),
        "whitened": w is not None,
        "cells": auto.n_cells,
        "queries_per_call": len(queries[0]),
        "ms_median": {k: statistics.median(v) for k, v in times.items()},
        "computed_share_median": statistics.median(shares),
        "auto_answered_by": dict(auto.stats),
        "max_rel_error_vs_float64": errors,
    }


def _outputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((n, 1), np.float32), np.empty((n, 1), np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the test images")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as d:
        rows = [bench_data(*ds, Path(d) / "models", args.rounds) for ds in _datasets(Path(d))]
    print(f"\nbank search per image (1,024 patches at 256 px), median ms, {os.cpu_count()} CPU threads")
    print(f"{'data':<14}{'bank':>12}{'cells auto':>12}{'pruned only':>13}{'faiss':>9}{'anomalib':>10}"
          f"{'graph ORT':>11}{'faiss/auto':>12}{'anomalib/auto':>15}{'computed':>10}")  # fmt: skip
    for r in rows:
        t = r["ms_median"]
        print(
            f"{r['data']:<14}{'x'.join(map(str, r['bank'])):>12}{t['cells_auto']:>12.2f}{t['cells_pruned_only']:>13.2f}"
            f"{t['faiss']:>9.2f}{t['anomalib']:>10.2f}{t['search_graph_ort']:>11.2f}{t['faiss'] / t['cells_auto']:>11.2f}x"
            f"{t['anomalib'] / t['cells_auto']:>14.2f}x{r['computed_share_median']:>10.1%}"
        )
        if r["whitened"]:
            one, every = t["whiten_1_thread"], t["whiten_all_threads"]
            print(f"  whitened bank: whitening product + auto search {one:.2f} ms with the product on one BLAS "
                  f"thread (shipped), {every:.2f} ms on all ({every / one:.2f}x)")  # fmt: skip
        print(f"  auto answered by {r['auto_answered_by']}; max relative error of the nearest squared distance "
              f"vs float64: " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_error_vs_float64"].items()))  # fmt: skip
    out = ROOT / "bench" / "results" / "knn.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
