"""FK methods that also train on the labelled validation set they read.

A model trained on every validation image misclassifies almost none of them, so FK's miss set
(the validation images the model gets wrong) empties. The variants here keep part of the
validation set out of training and take the miss set only from that part:

- `HeldOutFolds(rotate=False)` (fk-nn-split): the validation set is dealt once into `folds`
  class-stratified folds; fold 0 is never trained on and is the miss-set part, the other folds
  are trained on in every iteration.
- `HeldOutFolds(rotate=True)` (fk-nn-kfold): a held-out fold per iteration. The model trained at
  iteration t sees every fold but t mod folds, and the next acquisition reads the misses of
  exactly that fold, so every miss comes from a model that never saw the image, while over the
  run every validation image is both trained on and used as a reference.

The plain `fk-nn --train-on-validation` (whatever miss set remains, least-confident fallback)
is the naive reference these are compared with.

Without a validation set (the cold start, `--val-per-class 0`, and `label.py` on a user's images) the
folds are dealt from the method's own labels as they arrive (`label_folds`), with the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """[V] fold number of each validation image: each class's images, in a seeded order, dealt round-robin
    over the folds (so every fold gets about 1/folds of every class); the first fold dealt rotates by class
    so small classes do not all land in the low folds."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    assignment = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return assignment


EMPTY_FOLD_FALLBACK = "coreset"  # what a validation-reading method acquires with while it has nothing to read


def label_folds(classes: np.ndarray, folds: int) -> np.ndarray:
    """[L] fold of each labelled image given in first-labelled order: class c's r-th image goes to fold
    (c + r) mod folds, so every fold gets about 1/folds of each class, small classes do not all start in
    fold 0, and an image keeps its fold as later labels arrive."""
    fold_of = np.empty(len(classes), dtype=np.int64)
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        fold_of[members] = (label + np.arange(len(members))) % folds
    return fold_of


@dataclass(frozen=True)
class HeldOutFolds:
    """Which validation fold a method keeps out of training, and which fold's misses it reads."""

    rotate: bool

    def held_out(self, iteration: int, folds: int) -> int:
        """The fold the model trained at `iteration` does not see."""
        return iteration % folds if self.rotate else 0

    def reference(self, iteration: int, folds: int) -> int:
        """The fold whose misses the acquisition at `iteration` reads: the one the model it uses (trained at
        iteration - 1; at 0 the initial model, which saw no validation image) did not see."""
        return self.held_out(iteration - 1, folds)

    def parts(self, fold_of: np.ndarray, iteration: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
        """(validation positions the acquisition at `iteration` reads, positions trained on after it)."""
        reference = np.flatnonzero(fold_of == self.reference(iteration, folds))
        trained = np.flatnonzero(fold_of != self.held_out(iteration, folds))
        return reference, trained
