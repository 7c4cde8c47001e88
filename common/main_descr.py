"""Stage 3: Fisher-kernel feature-density matching, the FK acquisition (SPEC section 5).

miss set (misclassified validation images) -> k-centre greedy centres -> top-K most similar
unlabelled pool images per centre (FAISS inner product) -> rank-major unique fill of `budget`.
"""
from __future__ import annotations

import numpy as np

from common import search


def miss_set(val_logits: np.ndarray, val_labels: np.ndarray, fallback_size: int) -> np.ndarray:
    """Validation images the model misclassifies; if none, the `fallback_size` least confident."""
    misses = np.flatnonzero(val_logits.argmax(axis=1) != val_labels)
    if len(misses):
        return misses
    shifted = val_logits - val_logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return np.argsort(probs.max(axis=1), kind="stable")[: min(fallback_size, len(val_labels))]


def k_centre_greedy(vectors: np.ndarray, count: int, rng: np.random.Generator, chunk: int = 65536) -> np.ndarray:
    """Greedy k-centre in similarity space: rows of `vectors` [M, D] chosen as centres.

    Starts from a seeded random row, then repeatedly adds the row whose highest similarity to
    the chosen centres is lowest. A running maximum keeps each step at O(M·D).
    """
    total = len(vectors)
    if count >= total:
        return np.arange(total)
    chosen = np.empty(count, dtype=np.int64)
    chosen[0] = rng.integers(total)
    closest = np.full(total, -np.inf, dtype=np.float32)  # highest similarity to any chosen centre
    for step in range(count):
        if step:
            chosen[step] = int(np.argmin(closest))
        centre = vectors[chosen[step]]
        for start in range(0, total, chunk):
            np.maximum(closest[start : start + chunk], vectors[start : start + chunk] @ centre, out=closest[start : start + chunk])
        closest[chosen[: step + 1]] = np.inf  # never pick a centre twice, even a duplicate row
    return chosen


def rank_major_fill(candidate_ids: np.ndarray, candidate_similarities: np.ndarray, budget: int) -> np.ndarray:
    """Up to `budget` distinct ids: every centre's 1st match (most similar first), then the 2nd...

    candidate_ids, candidate_similarities: [n_centres, K]; ids < 0 (FAISS padding) are skipped.
    """
    by_similarity = np.argsort(-candidate_similarities, axis=0, kind="stable")  # per rank column
    ranked = np.take_along_axis(candidate_ids, by_similarity, axis=0).T.ravel()  # rank-major order
    ranked = ranked[ranked >= 0]
    _, first_positions = np.unique(ranked, return_index=True)
    return ranked[np.sort(first_positions)][:budget]


def match_pool(
    centre_vectors: np.ndarray, pool_vectors: np.ndarray, budget: int, top_k: int
) -> np.ndarray:
    """`budget` distinct rows of `pool_vectors` [U, D] most similar to the centres, rank-major.

    If the top-K lists hold fewer than `budget` distinct rows, K is doubled and the search
    repeated, so the result is exactly `budget` rows whenever U >= budget.
    """
    if budget > len(pool_vectors):
        raise ValueError(f"budget {budget} exceeds the {len(pool_vectors)} unlabelled images")
    index = search.inner_product_index(pool_vectors)
    k = min(top_k, len(pool_vectors))
    while True:
        similarities, ids = search.search(index, centre_vectors, k)
        selected = rank_major_fill(ids, similarities, budget)
        if len(selected) == budget or k == len(pool_vectors):
            return selected
        k = min(2 * k, len(pool_vectors))


def fisher_kernel_acquire(
    val_vectors: np.ndarray,
    misses: np.ndarray,
    pool_vectors: np.ndarray,
    budget: int,
    top_k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Rows of `pool_vectors` (the unlabelled pool) to label next, given the miss set."""
    miss_vectors = val_vectors[misses]
    centres = miss_vectors[k_centre_greedy(miss_vectors, budget, rng)] if len(misses) > budget else miss_vectors
    return match_pool(centres, pool_vectors, budget, top_k)
