"""DIRECT (common/strategies/imbalance.py): thresholds on a class's margin line, and the planted boundary found."""
from __future__ import annotations

import numpy as np
import torch

from common.strategies import STRATEGIES
from common.strategies.imbalance import direct_select, threshold_scores, uncertain_stretch
from mnist.lenet import LeNet


def test_threshold_scores_and_the_uncertain_stretch_on_a_known_line():
    assert threshold_scores(np.array([1.0, 1.0, -1.0, -1.0])).tolist() == [0, 2, 4, 2, 0]
    w = np.array([1.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, -1.0])
    assert uncertain_stretch(w) == (2, 9)  # last positive before the first negative; last negative after the last positive
    assert uncertain_stretch(np.zeros(5)) == (0, 4)


def test_direct_finds_the_planted_class_boundary_the_model_misplaces():
    """400 images on a line t in [0, 1]; the model puts the boundary at 0.5, the truth is at 0.7. With labels
    at both ends only, the labels DIRECT buys put the best threshold exactly at the true boundary, and its
    picks gather there (a fifth of random picks lie within 0.1 of it)."""
    t = np.linspace(0, 1, 400)
    positive = 1 / (1 + np.exp(-(t - 0.5) * 20))
    probabilities = np.stack([1 - positive, positive], axis=1)
    labels = (t > 0.7).astype(np.int64)
    labelled = np.zeros(400, dtype=bool)
    labelled[np.r_[0:5, 395:400]] = True
    for seed in range(3):
        chosen = direct_select(probabilities, labelled, labels, budget=80, rng=np.random.default_rng(seed),
                               annotators=5)
        assert len(set(chosen.tolist())) == 80 and not labelled[chosen].any()
        assert np.mean(np.abs(t[chosen] - 0.7) < 0.1) > 0.35
        bought = labelled.copy()
        bought[chosen] = True
        line = np.argsort(-probabilities[:, 1], kind="stable")
        w = np.where(bought[line], np.where(labels[line] == 1, 1.0, -1.0), 0.0)
        threshold = int(np.argmax(threshold_scores(w)))
        assert abs(t[line[threshold]] - 0.7) < 0.005


def test_the_registered_direct_strategy_picks_distinct_unlabelled_images_reproducibly(digits_state):
    torch.manual_seed(0)
    model = LeNet(10)
    unlabelled = np.arange(40, 300)
    picks = [STRATEGIES.get("direct").select(digits_state(model, unlabelled, 30)) for _ in range(2)]
    assert len(set(picks[0].tolist())) == 30 and np.isin(picks[0], unlabelled).all()
    np.testing.assert_array_equal(picks[0], picks[1])
