"""The exact chunked PyTorch matcher (common/torch_search.py) equals FAISS exact search, at every chunk size,
with and without bfloat16 shortlists; and when it is chosen."""
from __future__ import annotations

import numpy as np
import pytest

from common.search import PoolSearch, SearchSettings, exact_top_k, uses_torch
from common.torch_search import torch_top_k


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """A pool of 3000 unit vectors in 64 dimensions with 40 queries, each planted near 12 pool rows."""
    rng = np.random.default_rng(0)
    pool = unit(rng.standard_normal((3000, 64)))
    queries = unit(rng.standard_normal((40, 64)))
    for q in range(40):
        rows = rng.choice(3000, size=12, replace=False)
        pool[rows] = unit(queries[q] + 0.3 * rng.standard_normal((12, 64)))
    return pool.astype(np.float32), queries.astype(np.float32)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("pool_chunk", [7, 100, 2999, 3000, 65536])
def test_the_torch_matcher_returns_faiss_exact_ids_at_every_chunk_size(planted, approximate, pool_chunk):
    pool, queries = planted
    expected_scores, expected_ids = exact_top_k(pool, queries, 32)
    scores, ids = torch_top_k(pool, queries, 32, "cpu", approximate=approximate, pool_chunk=pool_chunk,
                              score_bytes=4 * 16 * pool_chunk)  # query blocks of 16: blocks are exercised too
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_bfloat16_shortlists_that_cannot_tell_rows_apart_are_rescored_in_float32():
    """Scores 1e-4 apart: distinct in float32, equal in bfloat16 (8 bits); the result stays the float32 order."""
    dim = 16
    query = np.full((1, dim), 1 / np.sqrt(dim), dtype=np.float32)
    pool = np.repeat(query, 500, axis=0)
    rng = np.random.default_rng(1)
    pool[:, 0] += (rng.permutation(500) * 2e-4).astype(np.float32)
    order = np.argsort(-(pool.astype(np.float64) @ query[0].astype(np.float64)), kind="stable")
    _scores, ids = torch_top_k(pool, query, 10, "cpu", approximate=True, pool_chunk=128)
    np.testing.assert_array_equal(ids[0], order[:10])


def test_ties_go_to_the_lowest_row_and_a_short_pool_pads_with_minus_one():
    pool = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    scores, ids = torch_top_k(pool, np.array([[1.0, 0.0]], dtype=np.float32), 6, "cpu", pool_chunk=2)
    assert ids.tolist() == [[0, 2, 3, 1, -1, -1]]
    assert scores[0, :4].tolist() == [1.0, 1.0, 1.0, 0.0] and np.isneginf(scores[0, 4:]).all()


def test_a_memmapped_pool_is_streamed_and_pool_search_uses_torch_when_asked(tmp_path, planted):
    pool, queries = planted
    stored = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.float16, shape=pool.shape)
    stored[:] = pool
    expected = exact_top_k(np.asarray(stored, dtype=np.float32), queries, 8)[1]
    searcher = PoolSearch(stored, SearchSettings(index="torch"))
    assert searcher.torch and searcher.index is None
    np.testing.assert_array_equal(searcher.top_k(queries, 8)[1], expected)


@pytest.mark.parametrize("index, device, faiss_gpu, expected", [
    ("auto", "cuda", False, True),    # a CUDA 13 machine: faiss-gpu wheels are CUDA 12 only
    ("exact", "cuda:1", False, True),
    ("auto", "cuda", True, False),    # faiss-gpu present: FAISS on the GPU
    ("ivf", "cuda", False, False),    # IVF asked for: FAISS on the CPU
    ("auto", "cpu", False, False),
    ("torch", "cpu", False, True),
])
def test_the_torch_matcher_is_picked_on_cuda_without_faiss_gpu(index, device, faiss_gpu, expected):
    assert uses_torch(SearchSettings(index=index, device=device), faiss_gpu) is expected
