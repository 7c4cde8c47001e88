"""TypiClust and ProbCover on planted data with known answers, and as registered strategies on digits."""
from __future__ import annotations

import numpy as np
import torch

from common.strategies import STRATEGIES
from common.strategies.low_budget import ball_graph, probcover_select, purity_delta, typiclust_select
from mnist.lenet import LeNet


def blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated 2-D blobs: a tight core of 8 points at each centre, the rest spread around it.
    Returns points [N, 2] (float32), blob of each point, whether each point is in a core."""
    rng = np.random.default_rng(seed)
    points, blob, core = [], [], []
    for number, size in enumerate(sizes):
        centre = np.array([40.0 * number, 0.0])
        points += [centre + 2.0 * rng.standard_normal((size - 8, 2)), centre + 0.01 * rng.standard_normal((8, 2))]
        blob += [number] * size
        core += [False] * (size - 8) + [True] * 8  # the core last: a pick of the first member would miss it
    return np.concatenate(points).astype(np.float32), np.array(blob), np.array(core)


def test_typiclust_takes_the_densest_point_of_each_planted_cluster():
    points, blob, core = blobs([60, 50, 40, 30, 20])
    chosen = typiclust_select(points, np.zeros(len(points), dtype=bool), budget=5, seed=0)
    assert sorted(blob[chosen]) == [0, 1, 2, 3, 4] and core[chosen].all()
    assert blob[chosen[0]] == 0  # with nothing labelled the largest cluster comes first


def test_typiclust_visits_the_clusters_without_labels_first():
    points, blob, _core = blobs([60, 50, 40, 30, 20])
    labelled = np.zeros(len(points), dtype=bool)
    labelled[np.flatnonzero(blob == 0)[:3]] = True  # the largest blob holds labels already
    chosen = typiclust_select(points, labelled, budget=4, seed=0)
    assert sorted(blob[chosen]) == [1, 2, 3, 4] and not labelled[chosen].any()


def test_probcover_covers_the_planted_balls_largest_first_and_skips_covered_ones():
    rng = np.random.default_rng(1)
    sizes = [50, 30, 20]
    points = np.concatenate([np.array([10.0 * n, 0.0]) + 0.05 * rng.standard_normal((size, 2))
                             for n, size in enumerate(sizes)]).astype(np.float32)
    ball = np.repeat(np.arange(3), sizes)
    starts, targets = ball_graph(points, delta=1.0)
    nothing = np.zeros(len(points), dtype=bool)
    chosen = probcover_select(starts, targets, nothing, budget=3, rng=np.random.default_rng(0))
    assert ball[chosen].tolist() == [0, 1, 2]
    labelled = ball == 1
    again = probcover_select(starts, targets, labelled, budget=2, rng=np.random.default_rng(0))
    assert ball[again].tolist() == [0, 2]  # ball 1 is covered by its labels
    beyond = probcover_select(starts, targets, nothing, budget=6, rng=np.random.default_rng(0))
    assert len(set(beyond.tolist())) == 6  # all covered after three: random distinct images after that


def test_the_ball_graph_lists_exactly_the_points_closer_than_delta():
    points = np.random.default_rng(2).standard_normal((300, 3)).astype(np.float32)
    starts, targets = ball_graph(points, delta=0.8)
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    for row in range(0, 300, 37):
        assert sorted(targets[starts[row] : starts[row + 1]].tolist()) == np.flatnonzero(distances[row] < 0.8).tolist()


def test_delta_is_where_95_percent_of_the_balls_stay_pure():
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(0, 1, 2000), rng.uniform(10, 11, 2000)])[:, None].astype(np.float32)
    # nearest point of the other cluster: 10 - x for the first, x - 1 for the second, uniform on [9, 10]
    assert abs(purity_delta(points, classes=2, seed=0) - 9.05) < 0.03


def test_the_registered_strategies_pick_distinct_unlabelled_images_reproducibly(digits_state):
    torch.manual_seed(0)
    model = LeNet(10)
    unlabelled = np.arange(40, 300)
    for method in ("typiclust", "probcover"):
        picks = [STRATEGIES.get(method).select(digits_state(model, unlabelled, 12, feature_layer="fc1"))
                 for _ in range(2)]
        assert len(set(picks[0].tolist())) == 12 and np.isin(picks[0], unlabelled).all()
        np.testing.assert_array_equal(picks[0], picks[1])
