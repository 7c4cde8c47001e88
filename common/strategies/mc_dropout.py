"""Bayesian uncertainty from MC-dropout (Gal, Islam & Ghahramani, "Deep Bayesian Active
Learning with Image Data", ICML 2017), optionally over an ensemble (Beluch et al., CVPR 2018).

Each score takes sampled softmax outputs of shape [S, N, C]: S = E models x K dropout passes.
"""
from __future__ import annotations

import numpy as np

from common.strategies.base import STRATEGIES, AcquisitionState, ScoreStrategy
from common.strategies.uncertainty import entropy
from common.train import mc_dropout_probabilities


def variation_ratio(samples: np.ndarray) -> np.ndarray:
    """1 - (share of passes voting for the modal class)."""
    num_classes = samples.shape[2]
    votes = samples.argmax(axis=2)  # [S, N]
    counts = np.stack([(votes == c).sum(axis=0) for c in range(num_classes)], axis=1)  # [N, C]
    return 1.0 - counts.max(axis=1) / samples.shape[0]


def mean_entropy(samples: np.ndarray) -> np.ndarray:
    """Entropy of the mean prediction (max-entropy)."""
    return entropy(samples.mean(axis=0))


def bald(samples: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and weights: H[mean p] - mean H[p]."""
    return entropy(samples.mean(axis=0)) - entropy(samples).mean(axis=0)


def mean_std(samples: np.ndarray) -> np.ndarray:
    """Mean over classes of the standard deviation of p across passes."""
    return samples.std(axis=0).mean(axis=1)


class MonteCarloStrategy(ScoreStrategy):
    """Scores K dropout-on passes (per ensemble member) of the unlabelled images."""

    mc_dropout = True
    run_settings = ("mc_samples",)

    def __init__(self, score) -> None:
        self.score = score

    def scores(self, state: AcquisitionState) -> np.ndarray:
        samples = mc_dropout_probabilities(
            state.models,
            state.unlabelled_images(),
            state.to_input,
            state.options.device,
            state.options.mc_samples,
            state.seed,
            state.options.batch_size,
        )
        return self.score(samples.numpy().astype(np.float64))


STRATEGIES.register("var-ratio-mc", MonteCarloStrategy(variation_ratio))
STRATEGIES.register("entropy-mc", MonteCarloStrategy(mean_entropy))
STRATEGIES.register("bald-mc", MonteCarloStrategy(bald))
STRATEGIES.register("std-mc", MonteCarloStrategy(mean_std))
