"""Uncertainty sampling from one deterministic forward pass (Settles, 2009 survey).

Each score takes softmax probabilities of shape [N, C] (the ensemble mean when --ensemble > 1).
"""
from __future__ import annotations

import numpy as np

from common.strategies.base import STRATEGIES, AcquisitionState, ScoreStrategy
from common.train import predict_probabilities

LOG_FLOOR = 1e-12


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy -sum_c p log p along the last axis."""
    return -(probs * np.log(np.maximum(probs, LOG_FLOOR))).sum(axis=-1)


def margin_score(probs: np.ndarray) -> np.ndarray:
    """Negative gap between the two most probable classes (small gap = uncertain)."""
    top_two = np.sort(probs, axis=1)[:, -2:]
    return -(top_two[:, 1] - top_two[:, 0])


def least_confidence_score(probs: np.ndarray) -> np.ndarray:
    """One minus the top class probability."""
    return 1.0 - probs.max(axis=1)


class SinglePassStrategy(ScoreStrategy):
    """Scores one probability matrix [N, C] of the unlabelled images."""

    def __init__(self, score) -> None:
        self.score = score

    def scores(self, state: AcquisitionState) -> np.ndarray:
        probs = predict_probabilities(
            state.models, state.unlabelled_images(), state.to_input, state.options.device, state.options.batch_size
        )
        return self.score(probs.numpy().astype(np.float64))


STRATEGIES.register("entropy", SinglePassStrategy(entropy))
STRATEGIES.register("margin", SinglePassStrategy(margin_score))
STRATEGIES.register("least-confidence", SinglePassStrategy(least_confidence_score))
