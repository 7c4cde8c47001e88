"""Uncertainty scores (docs/method.md#baselines) on hand-made probabilities with known answers, and ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.strategies import STRATEGIES
from common.strategies.base import top_scores
from common.strategies.mc_dropout import bald, mean_entropy, mean_std, variation_ratio
from common.strategies.uncertainty import entropy, least_confidence_score, margin_score
from mnist.lenet import LeNet

UNIFORM = np.full(4, 0.25)
ONE_HOT = np.array([0.0, 1.0, 0.0, 0.0])


def test_entropy_uniform_is_log_c_and_one_hot_is_zero():
    values = entropy(np.stack([UNIFORM, ONE_HOT, [0.5, 0.5, 0.0, 0.0]]))
    np.testing.assert_allclose(values, [np.log(4), 0.0, np.log(2)], atol=1e-9)
    assert np.argmax(values) == 0 and np.argmin(values) == 1


def test_margin_ordering():
    probs = np.array([[0.5, 0.45, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.34, 0.33, 0.33]])
    scores = margin_score(probs)
    np.testing.assert_allclose(scores, [-0.05, -0.85, -0.3, -0.01], atol=1e-12)
    assert list(np.argsort(-scores)) == [3, 0, 2, 1]  # smallest gap first


def test_least_confidence():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(least_confidence_score(probs), [0.3, 0.6, 0.0], atol=1e-12)


def test_variation_ratio():
    # samples [S=4, N=3, C=3]: unanimous, 3-vs-1, 2-vs-1-vs-1
    votes = np.array([[0, 1, 0], [0, 1, 1], [0, 1, 2], [0, 2, 0]])  # [S, N] argmax classes
    samples = np.eye(3)[votes] * 0.8 + 0.2 / 3
    np.testing.assert_allclose(variation_ratio(samples), [0.0, 0.25, 0.5])


def test_bald_zero_when_samples_identical_and_positive_on_disagreement():
    same = np.stack([np.array([[0.2, 0.8], [0.5, 0.5]])] * 5)
    np.testing.assert_allclose(bald(same), [0.0, 0.0], atol=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # confident passes that disagree
    np.testing.assert_allclose(bald(disagree), [np.log(2)], atol=1e-9)
    # uniform passes: high entropy, but no disagreement -> no mutual information
    uniform = np.stack([np.array([[0.5, 0.5]])] * 3)
    np.testing.assert_allclose(bald(uniform), [0.0], atol=1e-12)
    np.testing.assert_allclose(mean_entropy(uniform), [np.log(2)], atol=1e-12)


def test_mean_entropy_is_entropy_of_mean():
    samples = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(mean_entropy(samples), [np.log(2)], atol=1e-9)


def test_mean_std():
    samples = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    np.testing.assert_allclose(mean_std(samples), [0.5, 0.0], atol=1e-12)


def test_top_scores_highest_first_and_seeded_ties():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    top = top_scores(scores, 3, np.random.default_rng(0))
    assert set(top[:2].tolist()) == {1, 3} and top[2] == 2
    ties = np.zeros(20)
    np.testing.assert_array_equal(top_scores(ties, 5, np.random.default_rng(4)),
                                  top_scores(ties, 5, np.random.default_rng(4)))
    assert len(set(top_scores(ties, 20, np.random.default_rng(1)).tolist())) == 20


def _state(digits_state, iteration, unlabelled, mc_dropout=False):
    torch.manual_seed(0)
    return digits_state(LeNet(mc_dropout=mc_dropout), unlabelled, 12, iteration=iteration, pool_size=200, seed=5,
                        mc_samples=4, batch_size=64)


@pytest.mark.parametrize("method", ["entropy", "margin", "least-confidence", "var-ratio-mc", "entropy-mc",
                                    "bald-mc", "std-mc"])
def test_uncertainty_methods_are_random_at_b0(digits_state, method):
    unlabelled = np.arange(10, 200, 2)
    strategy = STRATEGIES.get(method)
    chosen = strategy.select(_state(digits_state, 0, unlabelled, strategy.mc_dropout))
    expected = STRATEGIES.get("random").select(_state(digits_state, 0, unlabelled))
    np.testing.assert_array_equal(np.sort(chosen), np.sort(expected))


def test_entropy_strategy_picks_highest_entropy_after_b0(digits_state, digits_spec):
    unlabelled = np.arange(10, 200, 2)
    state = _state(digits_state, 1, unlabelled)
    chosen = STRATEGIES.get("entropy").select(state)
    with torch.no_grad():
        probs = state.models[0].eval()(digits_spec.normalise(state.unlabelled_images())).softmax(dim=1).double().numpy()
    expected = unlabelled[np.argsort(-entropy(probs))[:12]]
    assert set(chosen.tolist()) == set(expected.tolist())
