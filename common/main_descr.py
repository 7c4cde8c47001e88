"""Stage 3: Fisher-kernel feature-density matching, the FK acquisition (docs/method.md#matching).

miss set (misclassified validation images) -> k-centre greedy centres -> top-K most similar
unlabelled pool images per centre (FAISS inner product: exact, or IVF for very large pools, see
common.search.SearchSettings) -> rank-major unique fill of `budget`.
"""
from __future__ import annotations

import numpy as np

from common import search
from common.search import DEFAULT_SETTINGS, SearchSettings


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


def choose_centres(val_vectors: np.ndarray, misses: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Validation rows that act as centres: every miss if they fit in `budget`, else `budget` of them by
    greedy k-centre on their vectors (`val_vectors` [V, D]; one rng draw, only in that case)."""
    if len(misses) <= budget:
        return misses
    return misses[k_centre_greedy(val_vectors[misses], budget, rng)]


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
    centre_vectors: np.ndarray,
    pool_vectors: np.ndarray,
    budget: int,
    top_k: int,
    *,
    search_settings: SearchSettings = DEFAULT_SETTINGS,
    report: dict | None = None,
) -> np.ndarray:
    """`budget` distinct rows of `pool_vectors` [U, D] most similar to the centres, rank-major.

    If the top-K lists hold fewer than `budget` distinct rows, K is doubled and the search
    repeated; when an IVF index pads lists with -1 (its probed lists ran out), nprobe is
    doubled too. So the result is exactly `budget` rows whenever U >= budget.
    With an approximate index, `report` (if given) receives "match_recall": recall@K of the
    last search against exact search on a seeded sample of at most RECALL_SAMPLE centres.
    """
    if budget > len(pool_vectors):
        raise ValueError(f"budget {budget} exceeds the {len(pool_vectors)} unlabelled images")
    searcher = search.PoolSearch(pool_vectors, search_settings, queries=len(centre_vectors))
    k = min(top_k, len(pool_vectors))
    while True:
        similarities, ids = searcher.top_k(centre_vectors, k)
        selected = rank_major_fill(ids, similarities, budget)
        if len(selected) == budget:
            if report is not None and searcher.approximate:
                report["match_recall"] = _sampled_recall(centre_vectors, pool_vectors, ids, k)
            return selected
        widened = bool((ids < 0).any()) and searcher.widen()
        if k == len(pool_vectors) and not widened:  # exhaustive search: every pool row was listed
            return selected
        k = min(2 * k, len(pool_vectors))


RECALL_SAMPLE = 256  # centres checked against exact search when the index is approximate


def _sampled_recall(centres: np.ndarray, pool: np.ndarray, approx_ids: np.ndarray, k: int) -> float:
    """Recall@k of `approx_ids` [Q, k] on a fixed sample of centres, by an exact streamed scan."""
    rows = np.random.default_rng(0).choice(len(centres), size=min(RECALL_SAMPLE, len(centres)), replace=False)
    _, exact_ids = search.exact_top_k(pool, centres[rows], k)
    return search.recall_at_k(exact_ids, approx_ids[rows])


def fisher_kernel_acquire(
    val_vectors: np.ndarray,
    misses: np.ndarray,
    pool_vectors: np.ndarray,
    budget: int,
    top_k: int,
    rng: np.random.Generator,
    *,
    search_settings: SearchSettings = DEFAULT_SETTINGS,
    report: dict | None = None,
) -> np.ndarray:
    """Rows of `pool_vectors` (the unlabelled pool) to label next, given the miss set."""
    centres = val_vectors[choose_centres(val_vectors, misses, budget, rng)]
    return match_pool(centres, pool_vectors, budget, top_k, search_settings=search_settings, report=report)
