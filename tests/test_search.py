"""Inner-product search for large pools (docs/method.md#matching, step 3): exact vs IVF index, the
"auto" choice, list-count clamps, chunked adds from memmaps, recall@k, and -1 padding."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import FAST_FLAGS

from common import search
from common.main_descr import fisher_kernel_acquire, k_centre_greedy, match_pool
from common.search import (
    SearchSettings,
    build_index,
    ivf_list_count,
    recall_at_k,
    sample_recall,
)


def normalised(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered(clusters: int, per_cluster: int, dim: int, spread: float, seed: int) -> np.ndarray:
    """`clusters` well-separated groups of `per_cluster` unit vectors, cluster-major rows."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng.normal(size=(clusters, dim)))
    rows = np.repeat(centres, per_cluster, axis=0) + spread * rng.normal(size=(clusters * per_cluster, dim))
    return normalised(rows)


@pytest.fixture(scope="module")
def easy_pool() -> tuple[np.ndarray, np.ndarray]:
    """20k points as 200 clusters in 32-D, and 300 queries near random pool points."""
    pool = clustered(200, 100, 32, 0.05, seed=0)
    rng = np.random.default_rng(1)
    queries = normalised(pool[rng.choice(len(pool), 300, replace=False)] + 0.01 * rng.normal(size=(300, 32)))
    return pool, queries


def test_forced_ivf_returns_the_exact_top_k_on_well_separated_clusters(easy_pool):
    pool, queries = easy_pool
    settings = SearchSettings(index="ivf", nprobe=16)
    index = build_index(pool, settings, gpu=False)
    assert isinstance(index, faiss.IndexIVFFlat)
    assert index.nlist == ivf_list_count(len(pool), settings) == 512  # round(4*sqrt(20000)) = 566 > 20000 // 39
    assert index.nprobe == 16 and index.ntotal == len(pool)
    _, ivf_ids = search.search(index, queries, 32)
    exact_similarities, exact_ids = search.search(build_index(pool, SearchSettings(index="exact"), gpu=False),
                                                  queries, 32)
    assert recall_at_k(exact_ids, ivf_ids) == 1.0
    chunked_similarities, chunked_ids = search.exact_top_k(pool, queries, 32)  # no index, pool read in chunks
    assert recall_at_k(exact_ids, chunked_ids) == 1.0
    np.testing.assert_allclose(chunked_similarities, exact_similarities, atol=1e-5)
    assert sample_recall(pool, queries, 32, settings, sample=100, seed=3) == 1.0


def test_ivf_with_one_probe_loses_recall_and_widening_restores_it(easy_pool):
    pool, queries = easy_pool
    settings = SearchSettings(index="ivf", nlist=512, nprobe=1)
    assert sample_recall(pool, queries, 32, settings, sample=300) < 1.0
    index = build_index(pool, settings, gpu=False)
    while search.widen_probe(index):
        pass
    assert index.nprobe == index.nlist  # exhaustive: exact top-k again
    _, exact_ids = search.exact_top_k(pool, queries, 32)
    assert recall_at_k(exact_ids, search.search(index, queries, 32)[1]) == 1.0
    assert not search.widen_probe(build_index(pool[:50], SearchSettings(), gpu=False))  # exact: nothing to widen


def test_auto_picks_exact_below_the_threshold_and_ivf_at_or_above_it():
    vectors = clustered(10, 100, 8, 0.1, seed=2)  # 1000 rows
    settings = SearchSettings(ivf_threshold=1000)
    assert type(build_index(vectors[:999], settings, gpu=False)) is faiss.IndexFlatIP
    assert isinstance(build_index(vectors, settings, gpu=False), faiss.IndexIVFFlat)
    assert type(build_index(vectors, SearchSettings(index="exact", ivf_threshold=10), gpu=False)) is faiss.IndexFlatIP
    assert type(build_index(vectors, gpu=False)) is faiss.IndexFlatIP  # default: exact below 200,000 rows
    assert not settings.uses_ivf(5000, gpu=True)  # "auto" keeps the exact index on a GPU
    assert SearchSettings(index="ivf").uses_ivf(5000, gpu=True)
    assert not SearchSettings(index="ivf").uses_ivf(0, gpu=False)  # an empty pool: nothing to train on


def test_list_count_default_and_clamps():
    default = SearchSettings()
    assert ivf_list_count(40_000, default) == 800  # round(4 * 200)
    assert ivf_list_count(1_000_000, default) == 100_000 // 39  # clamped by the training sample
    assert ivf_list_count(100, default) == 2  # 100 // 39: at least 39 training points per list
    assert ivf_list_count(10, default) == 1
    assert ivf_list_count(1, default) == 1
    assert ivf_list_count(10, SearchSettings(nlist=50)) == 10  # k-means needs a point per list
    assert ivf_list_count(5000, SearchSettings(nlist=50)) == 50


def test_forced_ivf_on_a_tiny_pool_pads_with_minus_one():
    vectors = clustered(1, 5, 8, 0.3, seed=4)
    index = build_index(vectors, SearchSettings(index="ivf", nprobe=16), gpu=False)
    assert index.nlist == 1 and index.nprobe == 1
    _, ids = search.search(index, vectors[:2], 8)
    assert sorted(ids[0, :5].tolist()) == list(range(5))
    assert (ids[:, 5:] == -1).all()


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_memmap_float64_column_slice_builds_the_same_index_as_float32(tmp_path, kind):
    rng = np.random.default_rng(5)
    matrix = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float64, shape=(70_000, 24))
    matrix[:] = np.repeat(rng.normal(size=(100, 24)), 700, axis=0) + 0.1 * rng.normal(size=(70_000, 24))
    matrix.flush()
    column_slice = np.load(tmp_path / "pool.npy", mmap_mode="r")[:, :16]  # z of a z | g matrix: strided
    contiguous = np.ascontiguousarray(column_slice, dtype=np.float32)
    settings = SearchSettings(index=kind, train_sample=20_000)
    from_slice = build_index(column_slice, settings, rng_seed=7, gpu=False)
    from_contiguous = build_index(contiguous, settings, rng_seed=7, gpu=False)
    assert from_slice.ntotal == from_contiguous.ntotal == 70_000  # spans two add chunks
    queries = contiguous[rng.choice(70_000, 50, replace=False)]
    for got, want in zip(search.search(from_slice, queries, 10), search.search(from_contiguous, queries, 10)):
        np.testing.assert_array_equal(got, want)
    if kind == "exact":
        np.testing.assert_array_equal(from_slice.reconstruct_n(0, 70_000), contiguous)


def test_build_index_never_copies_the_whole_pool(tmp_path):
    matrix = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float64, shape=(300_000, 16))
    matrix[:] = 1.0
    matrix.flush()
    column_slice = np.load(tmp_path / "pool.npy", mmap_mode="r")[:, :8]
    whole_float32 = 300_000 * 8 * 4
    tracemalloc.start()
    try:
        index = build_index(column_slice, SearchSettings(index="exact"), gpu=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.ntotal == 300_000
    assert peak < whole_float32 / 2  # one 65536-row float32 chunk at a time (FAISS's own copy is not traced)


def test_k_centre_greedy_memory_is_linear_in_rows():
    vectors = normalised(np.random.default_rng(6).normal(size=(200_000, 8)))
    tracemalloc.start()
    try:
        chosen = k_centre_greedy(vectors, 4, np.random.default_rng(0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(chosen.tolist())) == 4
    assert peak < 4 * 200_000 * 4  # a few [M] float32 arrays, never [M, D] or [M, count]


def test_recall_at_k_on_known_ids():
    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    approx = np.array([[3, 2, 10, 11], [4, 5, -1, -1]])
    assert recall_at_k(exact, approx) == 0.5
    assert recall_at_k(exact, exact[:, ::-1]) == 1.0  # order within the top-k does not matter
    assert recall_at_k(np.array([[1, 2]]), np.array([[3, 4]])) == 0.0
    assert recall_at_k(np.array([[1, -1], [2, 3]]), np.array([[1, 9], [2, 9]])) == 0.75  # padding never counts


def test_minus_one_ids_are_never_selected_and_the_budget_is_filled(monkeypatch):
    """IVF with one probe: a centre's list holds about 25 rows, fewer than K=64 and the budget."""
    pool = clustered(40, 25, 16, 0.05, seed=8)  # 1000 rows, cluster c = rows 25c..25c+24
    misses = pool[[0, 1, 2]] + 0.0  # near-duplicates of cluster 0: every centre probes the same list
    settings = SearchSettings(index="ivf", nlist=40, nprobe=1)
    seen = []

    def recording_search(index, queries, k):
        similarities, ids = original(index, queries, k)
        seen.append(ids)
        return similarities, ids

    original = search.search
    monkeypatch.setattr(search, "search", recording_search)
    rows = fisher_kernel_acquire(misses, np.arange(3), pool, budget=60, top_k=64, rng=np.random.default_rng(0),
                                 search_settings=settings)
    assert (seen[0] == -1).any()  # the first search did pad
    assert len(rows) == 60 and len(set(rows.tolist())) == 60
    assert rows.min() >= 0 and rows.max() < len(pool)
    assert set(range(25)) <= set(rows.tolist())  # the matched cluster first, then the nearest others


def test_ivf_match_pool_fills_the_whole_pool_when_asked():
    pool = clustered(10, 30, 8, 0.05, seed=9)
    selected = match_pool(pool[:2], pool, budget=300, top_k=4,
                          search_settings=SearchSettings(index="ivf", nlist=7, nprobe=1))
    assert sorted(selected.tolist()) == list(range(300))


def test_default_settings_give_the_exact_result():
    rng = np.random.default_rng(10)
    centres, pool = normalised(rng.normal(size=(6, 10))), normalised(rng.normal(size=(120, 10)))
    exact = match_pool(centres, pool, budget=25, top_k=4, search_settings=SearchSettings(index="exact"))
    np.testing.assert_array_equal(match_pool(centres, pool, budget=25, top_k=4), exact)


@pytest.mark.parametrize("field, value", [("index", "hnsw"), ("nprobe", 0), ("nlist", 0), ("train_sample", 0),
                                          ("ivf_threshold", -1)])
def test_invalid_settings_raise_one_line_value_error(field, value):
    with pytest.raises(ValueError) as error:
        SearchSettings(**{field: value})
    assert "\n" not in str(error.value)
    if field == "index":
        assert "auto, exact, ivf" in str(error.value)


def test_auto_keeps_exact_search_when_few_centres_query_a_large_pool():
    settings = SearchSettings(ivf_threshold=1000)
    lists = ivf_list_count(5000, settings)
    assert not settings.uses_ivf(5000, gpu=False, queries=4 * lists - 1)
    assert settings.uses_ivf(5000, gpu=False, queries=4 * lists)
    assert not settings.uses_ivf(5000, gpu=True, queries=10 * lists)  # the GPU's exact search wins


def test_memmap_pool_is_scanned_exactly_without_an_index(tmp_path, easy_pool):
    pool, queries = easy_pool
    stored = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float32, shape=pool.shape)
    stored[:] = pool
    scanner = search.PoolSearch(stored, SearchSettings(index="exact"))
    assert scanner.streamed and scanner.index is None and not scanner.approximate
    streamed_sims, streamed_ids = scanner.top_k(queries, 16)
    exact_sims, exact_ids = search.search(build_index(pool, SearchSettings(index="exact")), queries, 16)
    np.testing.assert_allclose(streamed_sims, exact_sims, atol=1e-5)
    assert recall_at_k(exact_ids, streamed_ids) == 1.0
    assert not search.PoolSearch(pool).streamed  # in-memory pools get a FAISS index


def test_match_pool_reports_recall_only_for_the_approximate_index(easy_pool):
    pool, queries = easy_pool
    report: dict = {}
    match_pool(queries[:50], pool, 50, 8, search_settings=SearchSettings(index="ivf", nprobe=4), report=report)
    assert 0.0 < report["match_recall"] <= 1.0
    exact_report: dict = {}
    match_pool(queries[:50], pool, 50, 8, search_settings=SearchSettings(index="exact"), report=exact_report)
    assert exact_report == {}


def test_cli_ivf_and_disk_store_record_match_recall(run_main, tmp_path, monkeypatch):
    """--descriptor-store disk puts the descriptors in memmaps (spied on), --index ivf reports recall."""
    opened = []
    real_open_memmap = np.lib.format.open_memmap

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open_memmap(path, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", spy)
    result = run_main("--out", tmp_path, "--methods", "fk-nn", "--index", "ivf", "--nprobe", "2",
                      "--descriptor-store", "disk", *FAST_FLAGS)
    assert result.returncode == 0, result.stderr
    (metrics,) = tmp_path.glob("digits/*/run0/unsup0/fk-nn/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(records) == 2 and all(0.0 < r["match_recall"] <= 1.0 for r in records)
    assert opened == ["validation_descriptors.npy", "pool_descriptors.npy"] * 2  # both iterations
    assert not (metrics.parent / "scratch").exists()
