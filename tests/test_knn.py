"""The pruned exact search finds what a float64 brute force finds, and PatchCore scores through it match FAISS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_core.data.images import read_image
from ad_core.data.layout import resolve_category
from ad_core.errors import BundleError
from ad_core.models.patchcore.head import PatchcoreHead
from ad_core.models.patchcore.knn import CellIndex, TorchIndex
from ad_core.models.patchcore.search_graph import GraphIndex, search_graph_bytes
from ad_core.runners import OrtRunner
from ad_core.runtime import open_scorer


def clustered(n, d, seed, spread=1.0, intrinsic=6):
    """Rows around 40 centres, each cluster spread over a few directions (patch embeddings of a few
    textures have a low intrinsic dimension), plus a little noise in all of them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)) * 4
    basis = rng.standard_normal((min(intrinsic, d), d)) / np.sqrt(min(intrinsic, d))
    z = rng.standard_normal((n, len(basis))) * spread
    return (centres[rng.integers(40, size=n)] + z @ basis + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def near_and_far(bank, n_near, n_far, seed=1):
    """Queries as PatchCore sees them: mostly close to some row (normal patches), a few far (defects)."""
    rng = np.random.default_rng(seed)
    rows = bank[rng.integers(len(bank), size=n_near + n_far)]
    noise = rng.standard_normal(rows.shape).astype(np.float32)
    noise[:n_near] *= 0.1
    noise[n_near:] *= 2.0
    return rows + noise


def brute_force(queries, bank, k):
    d2 = ((queries.astype(np.float64)[:, None, :] - bank.astype(np.float64)[None]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, order, 1), order, d2


def uniform(n, d, seed):
    """Rows with no structure at all: the bounds rule out almost nothing."""
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


@pytest.mark.parametrize("fallback", [True, False], ids=["auto", "pruned-only"])
@pytest.mark.parametrize(
    ("n", "d", "k", "prunes"), [(3000, 152, 1, True), (3000, 152, 9, True), (500, 17, 3, None), (40, 8, 1, False)]
)
def test_same_neighbours_as_float64_brute_force(n, d, k, prunes, fallback):
    bank = clustered(n, d, seed=n + d)
    queries = near_and_far(bank, 190, 10)
    index = CellIndex(bank, fallback=fallback)
    got_d2, got_i = index.search(queries, k)
    if not fallback or prunes:  # a large clustered bank: the pruned scan pays and answers everything
        assert index.stats == {"pruned": len(queries), "faiss": 0}
    elif prunes is False:  # 40 rows are a single cell: nothing to prune, FAISS answers after the probe
        assert index.stats["faiss"] > 0.8 * len(queries)
    assert_exact(queries, bank, k, got_d2, got_i)


def assert_exact(queries, bank, k, got_d2, got_i):
    ref_d2, ref_i, all_d2 = brute_force(queries, bank, k)
    assert got_d2.shape == got_i.shape == (len(queries), k)
    np.testing.assert_allclose(got_d2, ref_d2, rtol=1e-5, atol=1e-6)
    # the returned rows really are at the returned distances
    np.testing.assert_allclose(np.take_along_axis(all_d2, got_i, 1), ref_d2, rtol=1e-5, atol=1e-6)
    # and they are the brute-force rows wherever the next row is farther by more than rounding
    distinct = np.diff(np.sort(all_d2, 1)[:, : k + 1], axis=1)[:, -1] > 1e-4 * ref_d2[:, -1] + 1e-6
    assert distinct.mean() > 0.9
    np.testing.assert_array_equal(np.sort(got_i[distinct], 1), np.sort(ref_i[distinct], 1))


@pytest.mark.parametrize("k", [1, 4])
def test_unstructured_bank_goes_to_faiss_and_stays_exact(k):
    """When the bounds rule out little, the call is handed to FAISS; distances are still direct sums."""
    bank, queries = uniform(3000, 64, seed=0) * 100, uniform(1024, 64, seed=1) * 100
    # a few queries next to a row, where FAISS's expansion loses digits; off the probe's stride
    queries[1::64] = bank[:16] + np.float32(0.01)
    index = CellIndex(bank)
    first = index.search(queries, k)
    assert index.computed_share > CellIndex.pays_below  # the probe saw that pruning does not pay
    assert index.stats["faiss"] > 0.8 * len(queries)
    assert_exact(queries, bank, k, *first)
    near_d2 = brute_force(queries[1::64], bank, 1)[0][:, 0]
    np.testing.assert_allclose(first[0][1::64, 0], near_d2, rtol=1e-5)  # recomputed as direct sums
    for _ in range(CellIndex.reprobe_every - 1):  # FAISS answers whole calls now, without probing
        index.search(queries, k)
    assert index.stats["pruned"] < 0.2 * len(queries)
    index.search(queries, k)  # a fresh probe
    assert index.stats["pruned"] > 0
    # with pruning forced, the same answer, the slow way
    forced = CellIndex(bank, fallback=False)
    assert_exact(queries, bank, k, *forced.search(queries, k))
    assert forced.stats["faiss"] == 0


@pytest.mark.parametrize("k", [1, 9])
def test_torch_index_is_exact_where_the_expansion_is_not(k):
    """The torch search (a GPU's, run here on the CPU) re-ranks its candidates by direct distances:
    the same neighbours and distances as float64, even next to a row where the expansion loses digits,
    and over several chunks of queries."""
    bank = clustered(3000, 152, seed=3) * 10
    queries = near_and_far(bank, 500, 40)
    queries[::50] = bank[:11] + np.float32(0.01)
    index = TorchIndex(bank, "cpu", chunk=3000 * 128)  # 128 queries at a time: five chunks
    assert index.rows_at_once == 128
    got_d2, got_i = index.search(queries, k)
    assert_exact(queries, bank, k, got_d2, got_i)
    near = brute_force(queries[::50], bank, 1)[0][:, 0]
    np.testing.assert_allclose(got_d2[::50, 0], near, rtol=1e-5)
    assert (got_i[::50, 0] == np.arange(11)).all()
    with pytest.raises(ValueError, match="width 152"):
        index.search(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="between 1 and the bank size 3000"):
        index.search(queries, 3001)


@pytest.mark.parametrize("num_neighbors", [1, 9])
@pytest.mark.parametrize("whitened", [False, True], ids=["plain", "whitened"])
def test_the_head_on_the_banks_device_scores_as_the_numpy_head(num_neighbors, whitened):
    """The torch scorer on a GPU hands the head tensors: whitening, search, re-weighting, map resize and
    blur then run on the bank's device (the CPU here). Same scores and maps as the deployed numpy head."""
    rng = np.random.default_rng(4)
    bank = clustered(2000, 24, seed=9)
    whitening = (np.eye(24) + 0.1 * rng.standard_normal((24, 24))).astype(np.float32) if whitened else None
    embedding = (bank[rng.integers(0, 2000, 3 * 64)] + rng.normal(0, 0.3, (3 * 64, 24))).astype(np.float32)
    embedding = embedding.reshape(3, 8, 8, 24).transpose(0, 3, 1, 2)  # (B, D, h, w), like the graph's
    embedding[1, :, 2, 5] += 4.0  # one patch far from the bank
    deployed = PatchcoreHead(bank, num_neighbors, engine="cells", whitening=whitening)
    on_device = PatchcoreHead(bank, num_neighbors, engine="torch:cpu", whitening=whitening)
    assert on_device.takes_tensors and not deployed.takes_tensors
    want_score, want_map = deployed([embedding], 64)
    got_score, got_map = on_device([torch.from_numpy(embedding)], 64)
    assert isinstance(got_score, np.ndarray) and got_map.shape == want_map.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(got_score, want_score, rtol=1e-5)
    np.testing.assert_allclose(got_map, want_map, rtol=1e-5, atol=1e-6 * np.abs(want_map).max())
    assert got_score.argmax() == 1 and np.unravel_index(got_map[1, 0].argmax(), (64, 64))[0] // 8 in (1, 2, 3)
    with pytest.raises(BundleError, match="width 24 does not match the graph's embedding width 5"):
        on_device([torch.zeros(1, 5, 8, 8)], 64)


def test_the_search_graph_is_exact_and_takes_its_queries_in_parts():
    """convtrt's search.onnx (TensorRT builds search.plan from it), run here by ONNX Runtime: the same
    neighbours and distances as float64, next to bank rows too, for queries split into parts."""
    bank = clustered(3000, 152, seed=3) * 10
    queries = near_and_far(bank, 500, 40)
    queries[::50] = bank[:11] + np.float32(0.01)
    graph = search_graph_bytes(bank, 9)
    index = GraphIndex(OrtRunner(graph), 3000, 152, 9, max_queries=128)  # five calls
    assert index.runner.input_name == "queries"
    d9, i9 = index.search(queries, 9)
    assert_exact(queries, bank, 9, d9, i9)
    d1, i1 = index.search(queries, 1)  # the same graph, its nearest column
    np.testing.assert_array_equal(d1[:, 0], d9[:, 0])
    np.testing.assert_array_equal(i1[:, 0], i9[:, 0])
    d2, idx = index.search(queries[::50], 1)
    np.testing.assert_allclose(d2[:, 0], brute_force(queries[::50], bank, 1)[0][:, 0], rtol=1e-5)
    assert (idx[:, 0] == np.arange(11)).all() and idx.dtype == np.int64
    with pytest.raises(ValueError, match="returns at most 9 neighbours"):
        index.search(queries, 10)
    with pytest.raises(ValueError, match="width 152"):
        index.search(np.zeros((3, 5), np.float32))


def test_probe_share_tells_a_prunable_bank_from_one_that_is_not():
    """What PatchCore's ``whiten_mode`` auto reads: the share of the bank the pruned scan computes."""
    bank = clustered(3000, 152, seed=0)
    assert CellIndex(bank, fallback=False).probe_share(near_and_far(bank, 1000, 24)) < 0.5 * CellIndex.pays_below
    flat = uniform(3000, 64, seed=0)
    assert CellIndex(flat, fallback=False).probe_share(uniform(1024, 64, seed=1)) > CellIndex.pays_below


def test_more_accurate_than_the_blas_expansion():
    """FAISS's |q|^2 + |b|^2 - 2 q.b (its BLAS path, taken for a patch grid's 1,024 queries) loses
    digits for near neighbours of long vectors; direct sums do not."""
    import faiss

    bank = clustered(4000, 152, seed=5) * 10
    queries = bank[:1024] + np.float32(0.01)
    ref_d2 = brute_force(queries, bank, 1)[0][:, 0]
    ours = CellIndex(bank).search(queries, 1)[0][:, 0]
    flat = faiss.IndexFlatL2(152)
    flat.add(bank)
    theirs = flat.search(queries, 1)[0][:, 0]
    our_err = np.abs(ours - ref_d2) / ref_d2
    assert our_err.max() < 1e-5
    assert (np.abs(theirs - ref_d2) / ref_d2).max() > 100 * our_err.max()


def test_small_banks_duplicates_and_exact_hits():
    single = CellIndex(np.ones((1, 4), np.float32))
    d2, idx = single.search(np.zeros((2, 4), np.float32), 1)
    np.testing.assert_allclose(d2, [[4.0], [4.0]])
    assert (idx == 0).all()
    bank = np.repeat(clustered(30, 6, seed=7), 3, axis=0)  # every row three times
    index = CellIndex(bank)
    d2, idx = index.search(bank[::3], 3)
    np.testing.assert_array_equal(d2, 0.0)  # exact hits, three copies each
    np.testing.assert_array_equal(np.sort(idx, 1) // 3, np.arange(30)[:, None].repeat(3, 1))
    all_d2, all_i = index.search(bank[:2], len(bank))  # k = the whole bank: a full ranking
    assert sorted(all_i[0]) == list(range(len(bank)))
    assert (np.diff(all_d2, axis=1) >= 0).all()


def test_bad_input_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"non-empty \(N, D\)"):
        CellIndex(np.zeros((0, 4), np.float32))
    index = CellIndex(clustered(100, 8, seed=0))
    with pytest.raises(ValueError, match="width 8"):
        index.search(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="between 1 and the bank size 100"):
        index.search(np.zeros((3, 8), np.float32), 101)
    with pytest.raises(BundleError, match="choose one of auto, cells, faiss, torch"):
        PatchcoreHead(np.ones((4, 3), np.float32), engine="kdtree")


def test_patchcore_scores_with_cells_match_faiss(trained, sample_root):
    run = trained("patchcore")
    data = resolve_category(sample_root, "Sample_brick")
    images = [read_image(s.path) for s in data.test]
    cells = open_scorer(run, bank_search="cells")
    flat = open_scorer(run, bank_search="faiss")
    on_torch = open_scorer(run, bank_search="torch")  # a GPU's search, on the CPU here
    assert (cells.search.engine, flat.search.engine, on_torch.search.engine) == ("cells", "faiss", "torch-cpu")
    assert open_scorer(run).search.engine == "cells"  # the CPU default
    # the torch scorer on a GPU: the graph hands its tensors to the search, whose every step stays there
    all_torch = open_scorer(run, backend="torch", bank_search="torch")
    assert all_torch.runner.keep_on_device and on_torch.runner.backend != "torch"
    a = cells(images)
    # an image whose score is the threshold (a run tested elsewhere in the session may set it to a test
    # image's score) may go either way on float rounding; every other decision must be the same
    decided = np.abs(a.score - cells.image_threshold) > 1e-4
    assert decided.mean() > 0.9
    for other in (flat, on_torch, all_torch):
        b = other(images)
        np.testing.assert_allclose(a.raw_score, b.raw_score, rtol=1e-4)
        np.testing.assert_allclose(a.raw_map, b.raw_map, rtol=1e-3, atol=1e-3 * np.abs(b.raw_map).max())
        np.testing.assert_array_equal(a.is_anomaly[decided], b.is_anomaly[decided])
    # both against float64 brute force on the embeddings themselves
    batch = torch.stack([cells.preprocess(im) for im in images[:3]])
    emb = cells.runner(batch.numpy())[0]
    flat_q = emb.transpose(0, 2, 3, 1).reshape(-1, emb.shape[1])
    ref = brute_force(flat_q, cells.search.bank, 1)[0][:, 0]
    got = cells.search.index.search(flat_q, 1)[0][:, 0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_an_engine_folder_searches_its_bank_with_its_search_graph(trained, sample_root, tmp_path):
    """convtrt writes search.onnx beside PatchCore's engine; ``bank_search="engine"`` runs it (ONNX Runtime
    here, search.plan on TensorRT, which ``auto`` picks there) and scores as the CPU's search. A graph that
    holds another bank, or whose file changed, is refused."""
    import json
    import shutil

    from ad_core.convert import convtrt
    from ad_core.fileio import load_npz, save_npz_atomic

    out = convtrt("patchcore", None, trained("patchcore"), tmp_path / "engine").onnx.parent
    meta = json.loads((out / "meta.json").read_text())
    info = meta["engine"]
    assert info["search_onnx"] == "search.onnx" and "search.onnx" in meta["sha256"]
    bank = load_npz(out / "memory_bank.npz")
    assert info["search_rows"] == len(bank["memory_bank"]) and info["search_k"] == 9
    images = [read_image(s.path) for s in resolve_category(sample_root, "Sample_brick").test]
    default, on_graph = open_scorer(out), open_scorer(out, bank_search="engine")
    assert (default.search.engine, on_graph.search.engine) == ("cells", "engine-onnxruntime")
    a, b = default(images), on_graph(images)
    np.testing.assert_allclose(b.raw_score, a.raw_score, rtol=1e-5)
    np.testing.assert_allclose(b.raw_map, a.raw_map, rtol=1e-5, atol=1e-5 * np.abs(a.raw_map).max())
    # what auto does where the model graph runs on TensorRT (the plan would be taken; without one, search.onnx)
    head = PatchcoreHead.open(meta, bank, out / "memory_bank.npz", "auto", out, backend="tensorrt")
    assert head.engine == "engine-onnxruntime"
    assert PatchcoreHead.open(meta, bank, out / "memory_bank.npz", "auto", out, "onnxruntime").engine == "cells"

    other = tmp_path / "other_bank.npz"  # a --memory_bank from elsewhere: the graph holds another bank
    save_npz_atomic(other, {**bank, "memory_bank": bank["memory_bank"][::-1].copy()})
    with pytest.raises(BundleError, match="searches another memory bank"):
        open_scorer(out / "model.onnx", memory_bank=other, bank_search="engine")
    with pytest.warns(UserWarning, match="searching the bank on the CPU instead"):
        fallback = PatchcoreHead.open(meta, load_npz(other), other, "auto", out, backend="tensorrt")
    assert fallback.engine == "cells"
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    (changed / "search.onnx").write_bytes((out / "search.onnx").read_bytes()[:-8])
    with pytest.raises(BundleError, match="does not match the sha256"):
        open_scorer(changed, bank_search="engine")
    with pytest.raises(BundleError, match="bank search 'engine' runs the search graph"):
        open_scorer(trained("patchcore"), bank_search="engine")  # a run directory has none


def test_a_bank_too_large_for_one_graph_is_searched_on_the_cpu(trained, tmp_path, monkeypatch):
    from ad_core.convert import convtrt
    from ad_core.models.patchcore import search_graph

    monkeypatch.setattr(search_graph, "MAX_BANK_BYTES", 1000)  # as for a bank past ONNX's 2 GB
    result = convtrt("patchcore", None, trained("patchcore"), tmp_path / "engine")
    assert "The bank will be searched on the CPU: a bank of" in result.message
    assert not (tmp_path / "engine" / "search.onnx").exists()
    assert "too large" in open_scorer(tmp_path / "engine").meta["engine"]["search_skipped"]
    assert open_scorer(tmp_path / "engine").search.engine == "cells"
    with pytest.raises(BundleError, match="bank search 'engine' runs the search graph"):
        open_scorer(tmp_path / "engine", bank_search="engine")
