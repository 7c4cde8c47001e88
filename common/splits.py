"""Data protocol (docs/method.md#data-protocol): balanced validation set, then a class-imbalanced pool."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import UserError


def default_minority_classes(num_classes: int) -> tuple[int, ...]:
    """The upper half of the classes, C/2 .. C-1 (the default minority classes)."""
    return tuple(range(num_classes // 2, num_classes))


def seeded_half_classes(num_classes: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A seeded random half of the classes (the ImageNet protocol: no class order to lean on)."""
    return tuple(sorted(int(c) for c in rng.choice(num_classes, size=num_classes // 2, replace=False)))


# How the minority classes' pool images are thinned; a dataset names its rule in its spec.
def _joint(minority: np.ndarray, _labels: np.ndarray, majority_count: int, imbalance: float,
           rng: np.random.Generator) -> np.ndarray:
    """All minority images together subsampled to floor(N_majority / ir)
    (docs/method.md#validation-set-and-biased-pool)."""
    keep = min(len(minority), int(np.floor(majority_count / imbalance)))
    return rng.choice(minority, size=keep, replace=False) if keep < len(minority) else minority


def _per_class(minority: np.ndarray, labels: np.ndarray, _majority_count: int, imbalance: float,
               rng: np.random.Generator) -> np.ndarray:
    """Each minority class keeps floor(n_c / ir) of its images, i.e. drops (ir-1)/ir of them."""
    kept = []
    for cls in np.unique(labels[minority]):
        members = minority[labels[minority] == cls]
        kept.append(rng.choice(members, size=int(np.floor(len(members) / imbalance)), replace=False))
    return np.concatenate(kept) if kept else minority


IMBALANCE_RULES = {"joint": _joint, "per-class": _per_class}

# Which classes are the minority when the user names none; seeded rules draw per run.
MINORITY_RULES = {
    "upper-half": lambda num_classes, _rng: default_minority_classes(num_classes),
    "seeded-half": seeded_half_classes,
}


@dataclass(frozen=True)
class PoolSplit:
    """Indices into the dataset's train split: the validation set and the (biased) pool."""

    val_indices: np.ndarray  # [V] class-balanced
    pool_indices: np.ndarray  # [P] sorted ascending


def make_split(
    labels: np.ndarray,
    num_classes: int,
    val_per_class: int,
    imbalance: float,
    minority_classes: tuple[int, ...],
    rng: np.random.Generator,
    imbalance_rule: str = "joint",
) -> PoolSplit:
    """Draw `val_per_class` validation images per class (0: none, the cold start), then subsample the minority
    classes.

    By default ("joint") the minority classes' pool images are subsampled jointly, uniformly at
    random, to floor(N_majority / imbalance) images; "per-class" keeps floor(n_c / imbalance)
    of each minority class. Imbalance 1 keeps everything.
    """
    labels = np.asarray(labels)
    if imbalance < 1:
        raise UserError(f"--imbalance must be >= 1, got {imbalance:g}")
    if val_per_class < 0:
        raise UserError(f"--val-per-class must be >= 0, got {val_per_class}")
    repeated = sorted({c for c in minority_classes if list(minority_classes).count(c) > 1})
    if repeated:
        raise UserError(f"--minority-classes names class {', '.join(map(str, repeated))} more than once")
    bad = [c for c in minority_classes if not 0 <= c < num_classes]
    if bad or len(set(minority_classes)) >= num_classes:
        raise UserError(f"--minority-classes must be a proper subset of 0..{num_classes - 1}, got {list(minority_classes)}")

    val_parts = []
    for cls in range(num_classes):
        members = np.flatnonzero(labels == cls)
        if len(members) <= val_per_class:
            raise UserError(
                f"class {cls} has {len(members)} training images, too few for --val-per-class {val_per_class}"
            )
        if val_per_class:
            val_parts.append(rng.choice(members, size=val_per_class, replace=False))
    val_indices = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)

    rest = np.setdiff1d(np.arange(len(labels)), val_indices)
    is_minority = np.isin(labels[rest], np.asarray(minority_classes, dtype=labels.dtype))
    majority, minority = rest[~is_minority], rest[is_minority]
    kept_minority = IMBALANCE_RULES[imbalance_rule](minority, labels, len(majority), imbalance, rng)
    pool_indices = np.sort(np.concatenate([majority, kept_minority]))
    return PoolSplit(val_indices=val_indices, pool_indices=pool_indices)
