"""Low-budget acquisition on an embedding: TypiClust and ProbCover (docs/method.md#low-budget-baselines).

typiclust: Hacohen, Dekel and Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and Low
Budgets" (ICML 2022). The pool (labelled + unlabelled) is cut by k-means into min(|L| + B, 500) clusters;
clusters of 5 images or fewer are dropped; the others are visited by fewest labelled images, then largest
size; from each visited cluster the most typical unlabelled image is taken, typicality being the inverse
mean Euclidean distance to its min(20, n/2) nearest neighbours among the cluster's unlabelled images.
probcover: Yehuda, Dekel, Hacohen and Weinshall, "Active Learning Through a Covering Lens" (NeurIPS 2022).
Each image covers the delta-ball around it; greedily the image whose ball holds the most uncovered images
is taken (balls of labelled images count as covered); delta is the largest radius for which at least 95 %
of the balls are pure with respect to a k-means clustering into as many clusters as classes.

Both work on the L2-normalised penultimate features of the acquiring model (the papers use a fixed
self-supervised embedding; with --unsupervised 2 the run's model starts SimCLR-pretrained, so the first
acquisition reads that embedding). Neighbour searches use FAISS, in batches: memory stays O(N x D + edges).
"""
from __future__ import annotations

from abc import abstractmethod

import faiss
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from common.strategies.base import STRATEGIES, AcquisitionState, Strategy
from common.strategies.diversity import pool_features

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5  # clusters of this many images or fewer are never visited
TYPICALITY_NEIGHBOURS = 20
FULL_KMEANS_UP_TO = 50  # more clusters: mini-batch k-means (batches of 5000), as the reference does
PURITY = 0.95
PURITY_SAMPLE = 10_000  # images whose nearest other-cluster neighbour sets delta (seeded sample)
SEARCH_BATCH = 4096


def unit_rows(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def cluster(features: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means cluster of every row (full k-means up to 50 clusters, mini-batch above)."""
    if clusters <= FULL_KMEANS_UP_TO:
        model = KMeans(n_clusters=clusters, random_state=seed, n_init="auto")
    else:
        model = MiniBatchKMeans(n_clusters=clusters, batch_size=5000, random_state=seed, n_init="auto")
    return model.fit_predict(features)


def typicality(features: np.ndarray, neighbours: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the `neighbours` nearest other rows + 1e-5), for every row."""
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    squared, _ids = index.search(features, neighbours + 1)  # the first hit is the row itself
    return 1.0 / (np.sqrt(np.maximum(squared[:, 1:], 0.0)).mean(axis=1) + 1e-5)


def typiclust_select(features: np.ndarray, labelled: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """TypiClust's `budget` rows of `features` [N, D] (rows `labelled` [N] bool are labelled already)."""
    assignment = cluster(features, min(int(labelled.sum()) + budget, MAX_CLUSTERS, len(features)), seed)
    ids, sizes = np.unique(assignment, return_counts=True)
    labelled_counts = np.bincount(assignment[labelled], minlength=ids.max() + 1)[ids]
    kept = sizes > MIN_CLUSTER_SIZE
    order = ids[kept][np.lexsort((-sizes[kept], labelled_counts[kept]))]  # fewest labelled, then largest
    if len(order) == 0:
        order = ids[np.argsort(-sizes, kind="stable")]  # every cluster is tiny: visit them all, largest first
    free = ~labelled
    chosen = []
    for step in range(budget):
        members = np.flatnonzero((assignment == order[step % len(order)]) & free)
        if len(members) == 0:  # visited again after its images ran out: any free image of the largest clusters
            members = np.flatnonzero(free & np.isin(assignment, order))
            members = members if len(members) else np.flatnonzero(free)
        neighbours = min(TYPICALITY_NEIGHBOURS, len(members) // 2)
        pick = members[0] if neighbours == 0 else members[int(np.argmax(typicality(features[members], neighbours)))]
        chosen.append(pick)
        free[pick] = False
    return np.asarray(chosen, dtype=np.int64)


def nearest_other_cluster(features: np.ndarray, assignment: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """For each row in `sample`: the Euclidean distance to the nearest row of another cluster."""
    distances = np.empty(len(sample))
    for label in np.unique(assignment[sample]):
        index = faiss.IndexFlatL2(features.shape[1])
        index.add(features[assignment != label])
        rows = np.flatnonzero(assignment[sample] == label)
        squared, _ids = index.search(features[sample[rows]], 1)
        distances[rows] = np.sqrt(np.maximum(squared[:, 0], 0.0))
    return distances


def purity_delta(features: np.ndarray, classes: int, seed: int) -> float:
    """The largest delta for which at least 95 % of the delta-balls hold one k-means cluster only: a ball
    around x is pure while delta <= the distance from x to the nearest image of another cluster, so delta is
    the 5th percentile of that distance (the limit of the paper's grid search)."""
    assignment = cluster(features, classes, seed)
    sample = np.sort(np.random.default_rng(seed).permutation(len(features))[:PURITY_SAMPLE])
    return float(np.quantile(nearest_other_cluster(features, assignment, sample), 1.0 - PURITY))


def ball_graph(features: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The delta-ball graph (x -> y when ||x - y|| < delta, self included) as CSR (row starts [N+1], targets)."""
    index = faiss.IndexFlatL2(features.shape[1])
    index.add(features)
    starts, targets = [np.zeros(1, dtype=np.int64)], []
    for first in range(0, len(features), SEARCH_BATCH):
        limits, _squared, ids = index.range_search(features[first : first + SEARCH_BATCH], delta * delta)
        starts.append(starts[-1][-1] + limits[1:].astype(np.int64))
        targets.append(ids.astype(np.int32))
    return np.concatenate(starts), np.concatenate(targets)


def probcover_select(starts: np.ndarray, targets: np.ndarray, labelled: np.ndarray, budget: int,
                     rng: np.random.Generator) -> np.ndarray:
    """ProbCover's greedy max coverage on a ball graph: `budget` unlabelled rows; random ones once every
    image is covered."""
    count = len(starts) - 1
    row_of = np.repeat(np.arange(count), np.diff(starts))
    covered = np.zeros(count, dtype=bool)
    covered[targets[np.isin(row_of, np.flatnonzero(labelled))]] = True
    degree = np.bincount(row_of[~covered[targets]], minlength=count)  # uncovered images in each ball
    free = ~labelled
    chosen = []
    for _step in range(budget):
        candidates = np.flatnonzero(free)
        if degree[candidates].max() == 0:
            pick = int(rng.choice(candidates))
        else:
            pick = int(candidates[np.argmax(degree[candidates])])
            newly = targets[starts[pick] : starts[pick + 1]]
            newly = newly[~covered[newly]]
            covered[newly] = True
            # the graph is symmetric: the balls holding a newly covered image are that image's own neighbours
            holders = np.concatenate([targets[starts[y] : starts[y + 1]] for y in newly])
            np.subtract.at(degree, holders, 1)
        chosen.append(pick)
        free[pick] = False
    return np.asarray(chosen, dtype=np.int64)


class _EmbeddingStrategy(Strategy):
    """Selection on the normalised penultimate features of every pool image (labelled ones included)."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        everything = np.arange(len(state.pool))
        features, probabilities = pool_features(state, everything)
        labelled = np.ones(len(everything), dtype=bool)
        labelled[state.unlabelled] = False
        return self.pick(state, unit_rows(features), labelled, probabilities.shape[1])

    @abstractmethod
    def pick(self, state: AcquisitionState, features: np.ndarray, labelled: np.ndarray, classes: int) -> np.ndarray:
        """`state.budget` rows of `features` (pool positions), none `labelled`."""


class TypiClustStrategy(_EmbeddingStrategy):
    def pick(self, state: AcquisitionState, features: np.ndarray, labelled: np.ndarray, classes: int) -> np.ndarray:
        return typiclust_select(features, labelled, state.budget, int(state.rng.integers(2**31)))


class ProbCoverStrategy(_EmbeddingStrategy):
    def pick(self, state: AcquisitionState, features: np.ndarray, labelled: np.ndarray, classes: int) -> np.ndarray:
        delta = purity_delta(features, classes, int(state.rng.integers(2**31)))
        starts, targets = ball_graph(features, delta)
        state.notes["probcover_delta"] = round(delta, 5)
        state.notes["probcover_edges"] = int(len(targets))
        return probcover_select(starts, targets, labelled, state.budget, state.rng)


STRATEGIES.register("typiclust", TypiClustStrategy())
STRATEGIES.register("probcover", ProbCoverStrategy())
