"""coreset, badge and vaal: planted clusters, no duplicates, bounded memory, selections."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from common.strategies.diversity import greedy_k_centre, kmeans_plus_plus, squared_distance_to_set


def planted_clusters(clusters: int = 6, per_cluster: int = 50, dim: int = 8, seed: int = 0):
    """Tight clusters around far-apart centres; returns points [N, dim] and cluster ids [N]."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:clusters] * 100.0
    ids = np.repeat(np.arange(clusters), per_cluster)
    points = centres[ids] + rng.normal(scale=0.5, size=(len(ids), dim))
    return points, ids


def test_coreset_picks_one_point_per_cluster_first():
    points, ids = planted_clusters()
    chosen = greedy_k_centre(points, np.empty((0, 0)), count=6, rng=np.random.default_rng(1))
    assert sorted(ids[chosen].tolist()) == list(range(6))


def test_coreset_skips_clusters_already_labelled():
    points, ids = planted_clusters()
    labelled = np.concatenate([points[ids == 0][:1], points[ids == 1][:1], points[ids == 2][:1]])
    chosen = greedy_k_centre(points, labelled, count=3, rng=np.random.default_rng(1))
    assert sorted(ids[chosen].tolist()) == [3, 4, 5]


def test_coreset_never_repeats_even_with_duplicate_points():
    points = np.zeros((20, 4))
    points[10:] = 1.0  # two groups of identical points
    chosen = greedy_k_centre(points, np.empty((0, 0)), count=15, rng=np.random.default_rng(0))
    assert len(np.unique(chosen)) == 15


def test_squared_distance_to_set_matches_brute_force():
    rng = np.random.default_rng(2)
    points, centres = rng.normal(size=(300, 5)), rng.normal(size=(70, 5))
    brute = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_allclose(squared_distance_to_set(points, centres), brute, rtol=1e-9, atol=1e-9)


def test_coreset_memory_stays_bounded_on_a_100k_pool():
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(100_000, 64)).astype(np.float64)
    labelled = rng.normal(size=(2_000, 64))
    full_matrix_bytes = len(pool) * len(labelled) * 8  # 1.6 GB if it were ever formed
    tracemalloc.start()
    chosen = greedy_k_centre(pool, labelled, count=20, rng=np.random.default_rng(0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(np.unique(chosen)) == 20
    assert peak < 300 * 2**20 < full_matrix_bytes / 4


def test_badge_kmeanspp_covers_planted_clusters_without_duplicates():
    features, ids = planted_clusters(clusters=5, per_cluster=40, dim=6)
    scales = np.tile([1.0, -1.0], (len(features), 1))  # identical gradient scales: clusters decide
    for seed in range(5):
        chosen = kmeans_plus_plus(scales, features, count=30, rng=np.random.default_rng(seed))
        assert len(np.unique(chosen)) == 30
        assert set(ids[chosen].tolist()) == set(range(5))


def test_badge_first_centres_cover_far_clusters():
    features, ids = planted_clusters(clusters=4, per_cluster=100, dim=4)
    scales = np.ones((len(features), 2))
    covered = [len(set(ids[kmeans_plus_plus(scales, features, 4, np.random.default_rng(s))].tolist())) for s in range(10)]
    assert np.mean(covered) >= 3.8  # D^2 sampling almost always lands in a new cluster when they are far apart


def test_badge_seeding_does_not_treat_the_origin_as_a_centre():
    """A tight cluster at the origin (a confident class) still gets a seed once another is chosen: the
    origin weights only the first draw (BADGE's seeding), it is not kept as a centre."""
    features, ids = planted_clusters(clusters=3, per_cluster=50, dim=4)
    features[ids == 0] *= 1e-3  # cluster 0 sits at the origin
    scales = np.ones((len(features), 1))
    covered = [len(set(ids[kmeans_plus_plus(scales, features, 3, np.random.default_rng(s))].tolist())) for s in range(10)]
    assert np.mean(covered) >= 2.8


def test_badge_handles_all_zero_embeddings():
    scales = np.zeros((10, 3))  # a confident model on one class: every embedding is the origin
    chosen = kmeans_plus_plus(scales, np.ones((10, 4)), count=10, rng=np.random.default_rng(0))
    assert sorted(chosen.tolist()) == list(range(10))


@pytest.mark.parametrize("seed", range(5))
def test_badge_seeding_measures_distances_between_outer_products(seed):
    """Rows (a, h) and (2a, h/2) are the same gradient embedding a (x) h: after one is chosen the other
    is at distance 0 and must never be drawn, though their factors differ. Five embeddings, each
    written twice: five picks take one of each (a distance on the factors would take duplicates)."""
    rng = np.random.default_rng(seed)
    scales, features = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    scales = np.concatenate([scales, 2 * scales])
    features = np.concatenate([features, features / 2])
    chosen = kmeans_plus_plus(scales, features, count=5, rng=np.random.default_rng(seed))
    assert sorted(int(row) % 5 for row in chosen) == [0, 1, 2, 3, 4]


def test_vaal_selects_budget_unique_unlabelled_images_on_digits(digits_spec, digits_state):
    from common.strategies import STRATEGIES

    unlabelled = np.arange(20, 300)  # 0..19 labelled
    state = digits_state(digits_spec.model(10, False), unlabelled, 25, batch_size=128, vaal_steps=15)
    chosen = STRATEGIES.get("vaal").select(state)
    assert len(chosen) == 25 and len(np.unique(chosen)) == 25
    assert np.isin(chosen, unlabelled).all()
    again = STRATEGIES.get("vaal").select(state.__class__(**{**state.__dict__, "rng": np.random.default_rng(0)}))
    np.testing.assert_array_equal(chosen, again)  # seeded: same state, same selection


def test_every_method_is_listed_in_run_help(repo_root):
    import subprocess
    import sys

    from common.strategies import STRATEGIES

    help_text = subprocess.run([sys.executable, "run.py", "--help"], cwd=repo_root, capture_output=True,
                               text=True, env={"COLUMNS": "1000", "PATH": ""}).stdout
    for name in STRATEGIES.names():
        assert name in help_text, name
    assert {"coreset", "badge", "vaal", "fk-cov", "fk-mi"} <= set(STRATEGIES.names())
