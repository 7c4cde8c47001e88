"""LoGo: Kim et al., "Re-thinking Federated Active Learning based on Inter-class Diversity" (CVPR 2023).

The client clusters its unlabelled images by the local-only model's BADGE gradient embeddings
(k = its budget), then labels in each cluster the image the global model is least sure of.
Embeddings come as BADGE's two factors, g_i = scales_i (x) features_i ([U, C] and [U, D], see
common.strategies.diversity); plain embeddings [U, D] are scales = ones([U, 1]). The C*D
embeddings are never formed: a centroid is kept as a [C, D] matrix M, and g_i . M = a_i^T M h_i.
"""
from __future__ import annotations

import numpy as np

from common.errors import UserError
from common.strategies.base import top_scores
from common.strategies.diversity import CHUNK_ELEMENTS, kmeans_plus_plus

LLOYD_ITERATIONS = 50  # at most; stops earlier when the assignment no longer changes


def _inner_products(scales: np.ndarray, features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """g_i . M_k = a_i^T M_k h_i [U, K], in chunks of centroids (at most CHUNK_ELEMENTS values held)."""
    rows, classes = scales.shape
    inner = np.empty((rows, len(centroids)))
    chunk = max(1, CHUNK_ELEMENTS // max(1, rows * classes))
    for start in range(0, len(centroids), chunk):
        block = centroids[start : start + chunk]  # [k, C, D]
        projected = (features @ block.reshape(-1, block.shape[2]).T).reshape(rows, len(block), classes)
        inner[:, start : start + chunk] = (projected * scales[:, None, :]).sum(axis=2)
    return inner


def factored_kmeans(scales: np.ndarray, features: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster of every row [U] by k-means on g_i = scales_i (x) features_i: BADGE's seeded k-means++
    initialisation (diversity.kmeans_plus_plus), then Lloyd iterations; a cluster left empty restarts at
    the row farthest from its centroid (one distinct row per empty cluster), as scikit-learn does."""
    scales, features = np.asarray(scales, dtype=np.float64), np.asarray(features, dtype=np.float64)
    seeds = kmeans_plus_plus(scales, features, clusters, rng)
    centroids = scales[seeds, :, None] * features[seeds, None, :]  # [K, C, D]
    squared_norms = (scales**2).sum(axis=1) * (features**2).sum(axis=1)  # ||g_i||^2 [U]
    assignment = np.full(len(scales), -1)
    for _ in range(LLOYD_ITERATIONS):
        distances = (squared_norms[:, None] - 2.0 * _inner_products(scales, features, centroids)
                     + (centroids**2).sum(axis=(1, 2))[None, :])  # ||g_i - M_k||^2 [U, K]
        new_assignment = distances.argmin(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        membership = np.eye(clusters)[assignment]  # [U, K]
        sizes = membership.sum(axis=0)
        sums = np.stack([membership.T @ (scales[:, [c]] * features) for c in range(scales.shape[1])], axis=1)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None, None]  # mean of a_i h_i^T per cluster
        farthest = np.argsort(-distances[np.arange(len(scales)), assignment], kind="stable")[: (~filled).sum()]
        centroids[~filled] = scales[farthest, :, None] * features[farthest, None, :]  # restart empty ones
    return assignment


def logo_select(scales: np.ndarray, features: np.ndarray, global_entropy: np.ndarray, budget: int,
                rng: np.random.Generator) -> np.ndarray:
    """Exactly `budget` distinct rows [budget]: the highest-global-entropy row of each k-means cluster,
    then (when clusters are empty) the highest remaining entropies. Entropy ties break by a seeded coin."""
    global_entropy = np.asarray(global_entropy, dtype=np.float64)
    if not 0 <= budget <= len(global_entropy):
        raise UserError(f"LoGo budget must be between 0 and the {len(global_entropy)} unlabelled images, got {budget}")
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    assignment = factored_kmeans(scales, features, budget, rng)
    ranked = top_scores(global_entropy, len(global_entropy), rng)  # every row, most uncertain first
    _, first = np.unique(assignment[ranked], return_index=True)  # each cluster's top-entropy row
    heads = ranked[np.sort(first)]
    rest = ranked[~np.isin(ranked, heads)]
    return np.concatenate([heads, rest])[:budget].astype(np.int64)
