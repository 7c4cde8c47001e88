"""Non-IID client pools for federated runs: the pool's positions split over clients.

Partitioning works on the already-biased pool: the global imbalance (common/splits.py) is applied
before, by `common.splits.make_split`, so the union of the clients' pools is itself biased.
Every partition returns a list of sorted int64 arrays of pool positions, one per client, disjoint,
covering the pool (dirichlet-equal alone leaves out N mod clients positions). Call through
`partition`, which validates the inputs; every draw comes from the numpy Generator passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import UserError
from common.registry import Registry

DIRICHLET_TRIES = 1000  # redraws before a minimum client size is declared out of reach


@dataclass(frozen=True)
class PartitionOptions:
    """Knobs of the partitions; each one reads only its own."""

    alpha: float = 0.1  # Dirichlet concentration: small = few classes per client
    min_size: int = 10  # dirichlet: every client gets at least this many (clamped to N // clients)
    classes_per_client: int = 2  # pathological: k classes per client


def _sorted_parts(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _class_members(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each class's positions in a seeded random order."""
    return [rng.permutation(np.flatnonzero(labels == cls)) for cls in range(num_classes)]


def _iid(labels, _num_classes, num_clients, rng, _options) -> list[np.ndarray]:
    """A seeded permutation cut into near-equal parts (sizes differ by at most one)."""
    return _sorted_parts(np.array_split(rng.permutation(len(labels)), num_clients))


def _dirichlet(labels, num_classes, num_clients, rng, options) -> list[np.ndarray]:
    """Per class, client proportions ~ Dirichlet(alpha); redrawn until every client has min_size."""
    min_size = min(options.min_size, len(labels) // num_clients)
    for _ in range(DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for members in _class_members(labels, num_classes, rng):
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, options.alpha)))[:-1] * len(members)).astype(int)
            for client, share in enumerate(np.split(members, cuts)):
                parts[client].append(share)
        if min(sum(len(share) for share in shares) for shares in parts) >= min_size:
            return _sorted_parts([np.concatenate(shares) for shares in parts])
    raise UserError(f"dirichlet partition: no draw in {DIRICHLET_TRIES} gave all {num_clients} clients "
                    f"{min_size} images; lower the minimum client size or raise alpha ({options.alpha:g})")


def _dirichlet_equal(labels, num_classes, num_clients, rng, options) -> list[np.ndarray]:
    """Every client N // clients images (the N mod clients left over are dropped), class mix ~
    Dirichlet(alpha) over classes, drawn without replacement; a class that runs out is dropped from
    the mix and the rest renormalised (class counts drawn in multinomial batches, capped at what is left)."""
    members = _class_members(labels, num_classes, rng)
    taken = np.zeros(num_classes, dtype=np.int64)  # how many of each class's list are given out
    left = np.array([len(m) for m in members])
    size = len(labels) // num_clients
    parts = []
    for _ in range(num_clients):
        mix, counts = rng.dirichlet(np.full(num_classes, options.alpha)), np.zeros(num_classes, dtype=np.int64)
        while (need := size - counts.sum()) > 0:  # each pass fills the client or empties a class
            weights = np.where(left > counts, mix, 0.0)
            weights = weights / weights.sum() if weights.sum() > 0 else (left > counts) / (left > counts).sum()
            counts = np.minimum(counts + rng.multinomial(need, weights), left)
        parts.append(np.concatenate([m[t : t + c] for m, t, c in zip(members, taken, counts)]))
        taken, left = taken + counts, left - counts
    return _sorted_parts(parts)


def _pathological(labels, num_classes, num_clients, rng, options) -> list[np.ndarray]:
    """Client i holds k consecutive classes of a seeded class order (dealt round-robin, so every class
    has a holder); each class's images are split near-equally among its holders."""
    order = rng.permutation(num_classes)
    k = options.classes_per_client
    held = [order[(i * k + np.arange(k)) % num_classes] for i in range(num_clients)]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls, members in enumerate(_class_members(labels, num_classes, rng)):
        holders = [i for i in range(num_clients) if cls in held[i]]
        for client, share in zip(holders, np.array_split(members, len(holders))):
            parts[client].append(share)
    return _sorted_parts([np.concatenate(shares) for shares in parts])


PARTITIONS = Registry("partition")
PARTITIONS.register("iid", _iid)
PARTITIONS.register("dirichlet", _dirichlet)
PARTITIONS.register("dirichlet-equal", _dirichlet_equal)
PARTITIONS.register("pathological", _pathological)


def partition(name: str, labels: np.ndarray, num_classes: int, num_clients: int, rng: np.random.Generator,
              options: PartitionOptions = PartitionOptions()) -> list[np.ndarray]:
    """Split pool positions 0..N-1 (labels [N] of the biased pool) over `num_clients` clients."""
    labels = np.asarray(labels)
    split = PARTITIONS.get(name)
    if not 1 <= num_clients <= len(labels):
        raise UserError(f"number of clients must be between 1 and the pool size {len(labels)}, got {num_clients}")
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        raise UserError(f"pool labels must lie in 0..{num_classes - 1}")
    if not options.alpha > 0:
        raise UserError(f"alpha must be > 0, got {options.alpha:g}")
    if options.min_size < 0:
        raise UserError(f"minimum client size must be >= 0, got {options.min_size}")
    k = options.classes_per_client
    if name == "pathological" and not (1 <= k <= num_classes and num_clients * k >= num_classes):
        raise UserError(f"pathological partition needs 1 <= classes per client <= {num_classes} and "
                        f"clients x classes per client >= {num_classes}, got {num_clients} x {k}")
    return split(labels, num_classes, num_clients, rng, options)


def partition_summary(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Image counts [clients, classes] of each client's pool."""
    labels = np.asarray(labels)
    counts = [np.bincount(labels[part], minlength=num_classes) for part in parts]
    return np.array(counts, dtype=np.int64).reshape(len(parts), num_classes)
