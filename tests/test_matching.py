"""Stage 3 (docs/method.md#matching): miss set, greedy k-centre, rank-major fill and FAISS matching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.datasets import Split
from common.main_descr import fisher_kernel_acquire, k_centre_greedy, match_pool, miss_set, rank_major_fill
from common.strategies import STRATEGIES
from mnist.lenet import LENET_DESCRIPTOR_LAYERS, LeNet


def unit(dim: int, axis: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[axis] = 1.0
    return vector


def normalised(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def planted_pool(dim: int = 16, centres: int = 4, noise_rows: int = 40, seed: int = 0):
    """Centres e_0..e_{c-1}; for each a planted near-duplicate (cosine decreasing with c); far noise
    living in the other dimensions only (similarity 0 to every centre)."""
    rng = np.random.default_rng(seed)
    centre_vectors = np.stack([unit(dim, c) for c in range(centres)])
    planted = []
    for c in range(centres):
        row = unit(dim, c) * 1.0
        row[centres + c] = 0.1 * (c + 1)  # c=0 is the closest duplicate, c=3 the loosest
        planted.append(row)
    noise = np.zeros((noise_rows, dim), dtype=np.float32)
    noise[:, centres * 2 :] = rng.normal(size=(noise_rows, dim - centres * 2))
    pool = np.concatenate([noise[: noise_rows // 2], normalised(np.stack(planted)), noise[noise_rows // 2 :]])
    planted_rows = np.arange(noise_rows // 2, noise_rows // 2 + centres)
    return centre_vectors, normalised(pool), planted_rows


def test_match_pool_returns_planted_near_duplicates_in_similarity_order():
    centres, pool, planted_rows = planted_pool()
    selected = match_pool(centres, pool, budget=4, top_k=3)
    # rank 1 of every centre, most similar first: the planted duplicate of centre 0, then 1, 2, 3
    np.testing.assert_array_equal(selected, planted_rows)


def test_match_pool_budget_larger_than_pool_raises():
    centres, pool, _ = planted_pool(noise_rows=4)
    with pytest.raises(ValueError):
        match_pool(centres, pool, budget=len(pool) + 1, top_k=3)


def test_fisher_kernel_acquire_uses_every_miss_as_centre_when_few():
    centres, pool, planted_rows = planted_pool()
    # validation vectors: rows 1, 3, 5, 7 are the misses and equal the centres; the others are noise
    val = np.zeros((8, centres.shape[1]), dtype=np.float32)
    val[[1, 3, 5, 7]] = centres
    val[[0, 2, 4, 6]] = normalised(np.random.default_rng(1).normal(size=(4, centres.shape[1])))
    rows = fisher_kernel_acquire(val, np.array([1, 3, 5, 7]), pool, budget=4, top_k=32, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(rows, planted_rows)


def test_fisher_kernel_acquire_with_more_misses_than_budget_matches_one_per_cluster():
    dim = 12
    rng = np.random.default_rng(3)
    # misses: 3 tight clusters around e0, e1, e2 (10 each); budget 3 -> k-centre picks one per cluster
    misses = normalised(np.concatenate([unit(dim, c) + 0.05 * rng.normal(size=(10, dim)) for c in range(3)]))
    pool = np.zeros((30, dim), dtype=np.float32)
    pool[:, 6:] = rng.normal(size=(30, 6))  # noise, orthogonal to every cluster
    pool[[4, 17, 25]] = np.stack([unit(dim, 2), unit(dim, 0), unit(dim, 1)])
    rows = fisher_kernel_acquire(misses, np.arange(30), normalised(pool), budget=3, top_k=2, rng=np.random.default_rng(0))
    assert sorted(rows.tolist()) == [4, 17, 25]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_k_centre_greedy_picks_one_point_per_cluster(seed):
    dim, per_cluster, clusters = 10, 6, 4
    rng = np.random.default_rng(100 + seed)
    vectors = normalised(np.concatenate(
        [unit(dim, c) + 0.05 * rng.normal(size=(per_cluster, dim)) for c in range(clusters)]
    ))
    chosen = k_centre_greedy(vectors, clusters, np.random.default_rng(seed))
    assert len(chosen) == clusters
    assert sorted((chosen // per_cluster).tolist()) == list(range(clusters))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_centre_greedy_picks_the_far_outliers(seed):
    dim = 8
    rng = np.random.default_rng(seed)
    bulk = normalised(unit(dim, 0) + 0.02 * rng.normal(size=(20, dim)))
    outliers = np.stack([unit(dim, 3), unit(dim, 5), -unit(dim, 0)])
    vectors = np.concatenate([bulk, outliers])
    chosen = k_centre_greedy(vectors, 4, np.random.default_rng(seed))
    assert set(chosen.tolist()) >= {20, 21, 22}
    assert len(set(chosen.tolist())) == 4


def test_k_centre_greedy_never_repeats_duplicate_rows():
    vectors = np.tile(unit(5, 1), (7, 1))
    chosen = k_centre_greedy(vectors, 4, np.random.default_rng(0))
    assert len(set(chosen.tolist())) == 4


def test_k_centre_greedy_count_at_least_rows_returns_all():
    vectors = normalised(np.random.default_rng(0).normal(size=(5, 3)))
    np.testing.assert_array_equal(k_centre_greedy(vectors, 5, np.random.default_rng(0)), np.arange(5))
    np.testing.assert_array_equal(k_centre_greedy(vectors, 9, np.random.default_rng(0)), np.arange(5))


def test_k_centre_greedy_seeded_start():
    vectors = normalised(np.random.default_rng(7).normal(size=(50, 6)))
    first = k_centre_greedy(vectors, 5, np.random.default_rng(11))
    again = k_centre_greedy(vectors, 5, np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    assert first[0] == np.random.default_rng(11).integers(50)


def test_rank_major_fill_order():
    ids = np.array([[5, 6, 7], [8, 5, 9], [10, 11, 12]])
    sims = np.array([[0.9, 0.5, 0.1], [0.95, 0.8, 0.2], [0.7, 0.6, 0.3]])
    # first matches by similarity: 8 (.95), 5 (.9), 10 (.7); second: 5 (.8, duplicate), 11 (.6), 6 (.5);
    # third: 12 (.3), 9 (.2), 7 (.1)
    np.testing.assert_array_equal(rank_major_fill(ids, sims, 5), [8, 5, 10, 11, 6])
    np.testing.assert_array_equal(rank_major_fill(ids, sims, 100), [8, 5, 10, 11, 6, 12, 9, 7])


def test_rank_major_fill_skips_faiss_padding():
    ids = np.array([[3, -1], [4, -1]])
    sims = np.array([[0.5, -np.inf], [0.9, -np.inf]])
    np.testing.assert_array_equal(rank_major_fill(ids, sims, 4), [4, 3])


def test_match_pool_doubles_k_when_top_k_is_too_small():
    dim = 6
    # 9 identical copies of e0 (rows 0..8), 3 far rows (9..11); both centres see only the copies at K=1
    pool = np.concatenate([np.tile(unit(dim, 0), (9, 1)), -np.tile(unit(dim, 0), (3, 1))])
    centres = np.stack([unit(dim, 0), normalised((unit(dim, 0) + 0.1 * unit(dim, 1))[None])[0]])
    selected = match_pool(centres, pool, budget=7, top_k=1)
    assert len(selected) == 7 and len(set(selected.tolist())) == 7
    assert set(selected.tolist()) <= set(range(9))
    selected = match_pool(centres, pool, budget=12, top_k=1)  # the whole pool
    assert sorted(selected.tolist()) == list(range(12))


def test_miss_set_returns_misclassified():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(miss_set(logits, labels, fallback_size=3), [1, 2])


def test_miss_set_falls_back_to_least_confident_when_nothing_is_missed():
    logits = np.array([[5.0, 0.0], [0.2, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 0.1]])
    labels = np.array([0, 0, 1, 0, 1])  # all correct
    np.testing.assert_array_equal(miss_set(logits, labels, fallback_size=3), [4, 1, 3])
    np.testing.assert_array_equal(miss_set(logits, labels, fallback_size=50), [4, 1, 3, 2, 0])


def test_fisher_kernel_acquire_with_fallback_misses_fills_budget():
    centres, pool, planted_rows = planted_pool()
    val_logits = np.array([[9.0, 0.0], [0.1, 0.0], [0.0, 9.0], [0.0, 0.2]])
    misses = miss_set(val_logits, np.array([0, 0, 1, 1]), fallback_size=2)
    np.testing.assert_array_equal(misses, [1, 3])
    val = np.stack([unit(16, 9), centres[0], unit(16, 10), centres[1]])
    rows = fisher_kernel_acquire(val, misses, pool, budget=6, top_k=1, rng=np.random.default_rng(0))
    assert len(set(rows.tolist())) == 6
    assert rows[0] == planted_rows[0] and rows[1] == planted_rows[1]


# --- the FK strategies on real images: exact budget, unlabelled only, K doubling, empty miss set -----


def _fk_options(top_k: int) -> dict:
    return {"descriptor_layers": LENET_DESCRIPTOR_LAYERS["l80"], "top_k": top_k, "batch_size": 64}


@pytest.mark.parametrize("method", ["fk-features", "fk-pred", "fk-nn", "fk-nn-grad", "fk-oracle"])
def test_fk_strategy_returns_budget_unlabelled_indices_even_with_k_1(digits_state, method):
    torch.manual_seed(0)
    model = LeNet()
    unlabelled = np.setdiff1d(np.arange(300), np.arange(0, 300, 3))  # every third image already labelled
    state = digits_state(model, unlabelled, budget=40, **_fk_options(top_k=1))
    chosen = STRATEGIES.get(method).select(state)
    assert len(chosen) == 40 and len(np.unique(chosen)) == 40
    assert np.isin(chosen, unlabelled).all()


def test_fk_strategy_survives_an_empty_miss_set(digits_data, digits_state):
    torch.manual_seed(0)
    model = LeNet()
    with torch.no_grad():
        model.fc2.bias[3] = 1000.0  # always predicts 3
    threes = torch.nonzero(digits_data.train.labels == 3).flatten()[:20]
    validation = Split(images=digits_data.train.images[threes], labels=digits_data.train.labels[threes])
    state = digits_state(model, np.arange(300), budget=15, validation=validation, **_fk_options(top_k=4))
    chosen = STRATEGIES.get("fk-nn").select(state)
    assert len(np.unique(chosen)) == 15 and np.isin(chosen, np.arange(300)).all()


# --- agreement with plain reference implementations on random data -----------------------------


def naive_k_centre(vectors: np.ndarray, count: int, first: int) -> list[int]:
    """O(k·M) per step: recompute every row's highest similarity to all chosen centres."""
    chosen = [first]
    while len(chosen) < count:
        highest = (vectors @ vectors[chosen].T).max(axis=1)
        highest[chosen] = np.inf
        chosen.append(int(np.argmin(highest)))
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_centre_greedy_equals_naive_recomputation(seed):
    rng = np.random.default_rng(seed)
    vectors = normalised(rng.normal(size=(200, 12))).astype(np.float64)
    first = int(np.random.default_rng(seed + 50).integers(200))
    chosen = k_centre_greedy(vectors, 15, np.random.default_rng(seed + 50), chunk=37)
    assert chosen.tolist() == naive_k_centre(vectors, 15, first)


def brute_force_rank_major(centres: np.ndarray, pool: np.ndarray, budget: int) -> list[int]:
    similarities = centres @ pool.T  # [n_centres, U]
    order = np.argsort(-similarities, axis=1, kind="stable")
    picked: list[int] = []
    for rank in range(pool.shape[0]):
        column = order[:, rank]
        for centre in np.argsort(-similarities[np.arange(len(centres)), column], kind="stable"):
            row = int(column[centre])
            if row not in picked:
                picked.append(row)
    return picked[:budget]


@pytest.mark.parametrize("top_k", [1, 2, 32])
def test_match_pool_equals_brute_force(top_k):
    rng = np.random.default_rng(5)
    centres = normalised(rng.normal(size=(6, 10)))
    pool = normalised(rng.normal(size=(120, 10)))
    selected = match_pool(centres, pool, budget=25, top_k=top_k)
    assert selected.tolist() == brute_force_rank_major(centres, pool, 25)
