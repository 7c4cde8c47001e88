"""DIRECT (Nuggehalli, Zhang, Jain and Nowak, "DIRECT: Deep Active Learning under Imbalance and Label Noise",
ICML 2025), an active-learning method for imbalanced pools (docs/method.md#direct).

For every class k the pool is ordered by the model's margin for k (p_k - max_j p_j): a one-dimensional
line on which the labelled images are positives (class k) and negatives, and a threshold separates them.
1. Version-space reduction, for the rarest classes: the uncertain stretch between the last positive
   before the first negative and the last negative after the last positive is sampled uniformly, in rounds
   of B1 images (parallel annotators) whose labels arrive before the next round, and the stretch shrinks
   from the side whose threshold classifies the labels worse, until the class's share is spent.
2. The rest of the budget, split evenly over the classes, is spent on the unlabelled images nearest (on
   each class's line) to its best threshold, alternately on either side.
Labels of the images it picks arrive while it picks (they belong to the batch it returns), so DIRECT reads
the pool's labels of exactly those images; a labelling project cannot answer within one `next`.
"""
from __future__ import annotations

import math

import numpy as np

from common.strategies.base import STRATEGIES, AcquisitionState, RandomStrategy, Strategy
from common.train import predict_probabilities

PARALLEL_ANNOTATORS = 20  # B1 (LabelBench's default)
MIN_BUDGET_PER_CLASS = 60  # LabelBench's default


def threshold_scores(w: np.ndarray) -> np.ndarray:
    """[n + 1] score of every threshold h on a line of labels w (+1 positive, -1 negative, 0 unknown): the
    first h images called positive, the rest negative; score = agreements - disagreements."""
    above = np.concatenate([[0.0], np.cumsum(w)])
    below = np.concatenate([[0.0], np.cumsum(w[::-1])])[::-1]
    return above - below


def uncertain_stretch(w: np.ndarray) -> tuple[int, int]:
    """(I, J): I the last labelled positive before the first labelled negative from the top, J the last labelled
    negative before the first labelled positive from the bottom (0 and n - 1 when there is none)."""
    first, last = 0, len(w) - 1
    for index in np.flatnonzero(w):
        if w[index] < 0:
            break
        first = int(index)
    for index in np.flatnonzero(w)[::-1]:
        if w[index] > 0:
            break
        last = int(index)
    return first, last


class Line:
    """One class's line: the pool in margin order, who is labelled, and each labelled image's sign."""

    def __init__(self, order: np.ndarray, labelled: np.ndarray, labels: np.ndarray, k: int) -> None:
        self.order, self.k = order, k
        self.w = np.where(labelled[order], np.where(labels[order] == k, 1.0, -1.0), 0.0)

    def learn(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.w[rows] = np.where(labels[self.order[rows]] == self.k, 1.0, -1.0)


def reduce_version_space(line: Line, labelled: np.ndarray, labels: np.ndarray, budget: int, annotators: int,
                         rng: np.random.Generator) -> list[int]:
    """Step 1 on one class's line: up to `budget` pool positions, labelled round by round (marked in
    `labelled`, their labels read from `labels`)."""
    first, last = uncertain_stretch(line.w)
    chosen, remaining = [], budget
    while remaining > 0:
        stretch = np.arange(first, last + 1)
        open_rows = stretch[~labelled[line.order[stretch]]]
        if not len(open_rows):
            break
        rows = rng.choice(open_rows, size=min(annotators, remaining, len(open_rows)), replace=False)
        labelled[line.order[rows]] = True
        line.learn(rows, labels)
        chosen += line.order[rows].tolist()
        diameter = int((~labelled[line.order[first : last + 1]]).sum())
        if diameter > 0:
            rounds = remaining // annotators
            shrink = 1.0 if rounds <= 1 else diameter ** (1.0 / rounds)
            target = math.ceil(diameter / shrink)
            while diameter > target and first < last:
                scores = threshold_scores(line.w)
                move_first = scores[first] < scores[last] or (scores[first] == scores[last] and rng.random() < 0.5)
                edge = first if move_first else last
                diameter -= int(not labelled[line.order[edge]])
                first, last = (first + 1, last) if move_first else (first, last - 1)
        remaining -= min(annotators, remaining)
    return chosen


def query_around_threshold(line: Line, labelled: np.ndarray, budget: int) -> list[int]:
    """Step 2 on one class's line: the `budget` unlabelled positions nearest its best threshold, alternately
    left and right of it."""
    best = int(np.argmax(threshold_scores(line.w)))
    left, right, chosen = best - 1, best, []
    while len(chosen) < budget and (left >= 0 or right < len(line.order)):
        for side in ("left", "right"):
            if len(chosen) >= budget:
                break
            while side == "left" and left >= 0 and labelled[line.order[left]]:
                left -= 1
            while side == "right" and right < len(line.order) and labelled[line.order[right]]:
                right += 1
            if side == "left" and left >= 0:
                chosen.append(int(line.order[left]))
                labelled[line.order[left]] = True
            elif side == "right" and right < len(line.order):
                chosen.append(int(line.order[right]))
                labelled[line.order[right]] = True
    return chosen


def direct_select(probabilities: np.ndarray, labelled: np.ndarray, labels: np.ndarray, budget: int,
                  rng: np.random.Generator, annotators: int = PARALLEL_ANNOTATORS,
                  min_per_class: int = MIN_BUDGET_PER_CLASS) -> np.ndarray:
    """DIRECT's `budget` pool positions: `probabilities` [N, C] of every pool image, `labelled` [N] bool,
    `labels` [N] (read for the labelled images and for the picks, as they are labelled)."""
    labelled = labelled.copy()
    classes = probabilities.shape[1]
    top = probabilities.max(axis=1, keepdims=True)
    margins = probabilities - top + 1e-8 * (top if classes > 2 else probabilities[:, :1])
    lines = [Line(np.argsort(-margins[:, k], kind="stable"), labelled, labels, k) for k in range(classes)]
    frequency = np.bincount(labels[labelled], minlength=classes)
    if budget // classes // 2 < min_per_class:
        reduced, per_class = classes, budget // classes // 2
    else:
        reduced, per_class = budget // (2 * min_per_class), min_per_class
    chosen: list[int] = []
    for k in np.argsort(-frequency, kind="stable")[classes - reduced:]:  # the rarest classes
        chosen += reduce_version_space(lines[k], labelled, labels, min(per_class, int((~labelled).sum())),
                                       annotators, rng)
    for line in lines:  # every label bought so far, on every class's line
        line.w = np.where(labelled[line.order], np.where(labels[line.order] == line.k, 1.0, -1.0), 0.0)
    rest = budget - len(chosen)
    for i, k in enumerate(rng.permutation(classes)):
        share = rest * (i + 1) // classes - rest * i // classes
        chosen += query_around_threshold(lines[k], labelled, share)
    if len(chosen) < budget:  # the lines ran out (tiny pools): random unlabelled images make up the batch
        chosen += rng.choice(np.flatnonzero(~labelled), size=budget - len(chosen), replace=False).tolist()
    return np.asarray(chosen[:budget], dtype=np.int64)


class DirectStrategy(Strategy):
    """DIRECT on the ensemble's mean softmax over the whole pool; random while nothing is labelled (its
    lines need labelled images)."""

    def select(self, state: AcquisitionState) -> np.ndarray:
        labelled = np.ones(len(state.pool), dtype=bool)
        labelled[state.unlabelled] = False
        if not labelled.any():
            return RandomStrategy().select(state)
        probabilities = predict_probabilities(state.models, state.pool.images, state.to_input, state.options.device,
                                              state.options.batch_size).double().numpy()
        return direct_select(probabilities, labelled, state.pool.labels.numpy(), state.budget, state.rng)


STRATEGIES.register("direct", DirectStrategy())
