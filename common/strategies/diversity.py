"""Diversity and hybrid acquisition on penultimate-layer features.

coreset: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach" (ICLR 2018) -- greedy k-centre (Euclidean) over labelled + unlabelled features.
badge: Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds"
(ICLR 2020) -- k-means++ seeding on last-layer gradient embeddings (p - onehot(y_hat)) x h.

Both keep memory at O(N (C + D)): distances are computed one centre at a time (or in bounded
chunks), never as an N x N matrix, and BADGE's C*D-dimensional embeddings are never formed
(their inner products factor as (a_i . a_j)(h_i . h_j)).
"""
from __future__ import annotations

import numpy as np
import torch

from common.gen_descr import layer_features
from common.images import take
from common.strategies.base import STRATEGIES, AcquisitionState, Strategy

CHUNK_ELEMENTS = 1 << 24  # at most 16M distances (128 MB in float64) held at once


def pool_features(state: AcquisitionState, positions: np.ndarray, model: torch.nn.Module | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features [N, D] (float64) and softmax [N, C] of pool images at `positions`, by `model`
    (default: the first of the state's models)."""
    options = state.options
    features, logits = layer_features(
        model or state.models[0], take(state.pool.images, positions), state.to_input, options.feature_layer,
        options.device, options.batch_size,
    )
    probs = torch.from_numpy(logits).double().softmax(dim=1).numpy()
    return features.astype(np.float64), probs


def gradient_embedding_factors(state: AcquisitionState, positions: np.ndarray, model: torch.nn.Module | None = None,
                               ) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's last-layer gradient embeddings for the predicted label, as their two factors: scales
    p - onehot(y_hat) [N, C] and penultimate features h [N, D] (embedding = scales (x) h)."""
    features, probs = pool_features(state, positions, model)
    scales = probs.copy()
    scales[np.arange(len(scales)), probs.argmax(axis=1)] -= 1.0  # dCE/dlogits for y_hat: p - onehot
    return scales, features


def squared_distance_to_set(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """min_j ||points_i - centres_j||^2 for every point [N], in chunks of centres."""
    nearest = np.full(len(points), np.inf)
    point_norms = (points**2).sum(axis=1)
    chunk = max(1, CHUNK_ELEMENTS // max(1, len(points)))
    for start in range(0, len(centres), chunk):
        block = centres[start : start + chunk]
        distances = points @ block.T  # in place from here: one [N, chunk] buffer at a time
        distances *= -2.0
        distances += point_norms[:, None]
        distances += (block**2).sum(axis=1)[None, :]
        np.minimum(nearest, distances.min(axis=1), out=nearest)
    return np.maximum(nearest, 0.0)


def greedy_k_centre(points: np.ndarray, centres: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of `points` chosen greedily, each the farthest from `centres` and the rows chosen
    before it; a seeded random first row when there are no centres. O(N·D) per choice."""
    if len(centres):
        nearest = squared_distance_to_set(points, centres)
    else:
        nearest = np.full(len(points), np.inf)
    chosen = np.empty(count, dtype=np.int64)
    norms = (points**2).sum(axis=1)
    for step in range(count):
        if np.isinf(nearest).all():
            pick = int(rng.integers(len(points)))
        else:
            pick = int(np.argmax(np.where(np.isfinite(nearest), nearest, -1.0)))
        chosen[step] = pick
        distances = norms + norms[pick] - 2.0 * points @ points[pick]
        np.minimum(nearest, np.maximum(distances, 0.0), out=nearest)
        nearest[chosen[: step + 1]] = -np.inf  # never chosen again
    return chosen


class CoresetStrategy(Strategy):
    """Greedy k-centre cover of the pool in penultimate-feature space."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        labelled = np.setdiff1d(np.arange(len(state.pool)), state.unlabelled)
        unlabelled_features, _ = pool_features(state, state.unlabelled)
        labelled_features = pool_features(state, labelled)[0] if len(labelled) else np.empty((0, 0))
        return state.unlabelled[greedy_k_centre(unlabelled_features, labelled_features, state.budget, state.rng)]


def kmeans_plus_plus(scales: np.ndarray, features: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on embeddings g_i = scales_i (x) features_i without forming them.

    The first centre is drawn with probability proportional to ||g||^2 (the distance to the
    origin); the origin is not kept as a centre. Each next centre is drawn proportionally to
    the squared distance to the nearest chosen centre, so a chosen point (distance 0) is never
    drawn again; if every remaining distance is 0, the draw is uniform over unchosen points.
    """
    squared_norms = (scales**2).sum(axis=1) * (features**2).sum(axis=1)  # ||a (x) h||^2 = ||a||^2 ||h||^2
    nearest = squared_norms.copy()
    chosen = np.empty(count, dtype=np.int64)
    available = np.ones(len(scales), dtype=bool)
    for step in range(count):
        weights = np.where(available, np.maximum(nearest, 0.0), 0.0)
        total = weights.sum()
        probabilities = weights / total if total > 0 else available / available.sum()
        pick = int(rng.choice(len(scales), p=probabilities))
        chosen[step] = pick
        available[pick] = False
        inner = (scales @ scales[pick]) * (features @ features[pick])
        distances = np.maximum(squared_norms + squared_norms[pick] - 2.0 * inner, 0.0)
        if step == 0:
            nearest = distances  # the origin only weighted the first draw; it is no centre
        else:
            np.minimum(nearest, distances, out=nearest)
    return chosen


class BadgeStrategy(Strategy):
    """k-means++ on gradient embeddings of the last layer for the predicted label."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        scales, features = gradient_embedding_factors(state, state.unlabelled)
        return state.unlabelled[kmeans_plus_plus(scales, features, state.budget, state.rng)]


STRATEGIES.register("coreset", CoresetStrategy())
STRATEGIES.register("badge", BadgeStrategy())
