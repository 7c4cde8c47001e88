"""Federated Fisher-kernel acquisition as pure functions over numpy messages.

The server holds the labelled validation set, each client its unlabelled pool. One acquisition:
1. server: `server_centres` -> `Centres` (the centres' matching vectors z (| g), true labels and
   block sizes); nothing else about the validation set is sent.
2. client: `client_candidates` describes its pool with the same global model and returns, per centre,
   its top-K local rows and their similarities (`Candidates`: ids and similarities [M, K], the rank
   is the column); no descriptor leaves the client.
3. server: `merge_candidates` merges the lists per centre and fills the budget rank-major, as central
   `rank_major_fill` does; if the lists were too short, the caller asks again with a larger K.
With every client's lists merged, the selection is the central one on the union of the pools
(`fisher_kernel_acquire` with the same centres). The one difference from central FK: fk-nn's
pseudo-label is the label of the nearest *centre*, not of the nearest validation image, because
the centres are all of the validation set a client sees.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from common import search
from common.datasets import Split
from common.gen_descr import DescriptorStore, Reference, compute_descriptors, images_layout, validation_descriptors
from common.images import Images
from common.main_descr import choose_centres, miss_set, rank_major_fill
from common.search import DEFAULT_SETTINGS, SearchSettings
from common.train import ToInput

# Pool pseudo-labels a client can compute alone: none (fk-features), the model's argmax, or the
# nearest centre's label by z (fk-nn) or by z and g (fk-nn-grad). "true" needs the labels a client
# does not have yet; "cov" and "mi" draw perturbations that depend on how the pool is batched.
CLIENT_PSEUDO_LABELS = (None, "pred", "nn", "nn-grad")


class _Message:
    """A dataclass sent between server and clients as a dict of numpy arrays, one per field."""

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]):
        missing = [field.name for field in fields(cls) if field.name not in arrays]
        if missing:
            raise ValueError(f"a {cls.__name__} message lacks {missing}")
        return cls(**{field.name: np.asarray(arrays[field.name]) for field in fields(cls)})

    @property
    def nbytes(self) -> int:
        """Bytes of array data the message carries."""
        return sum(array.nbytes for array in self.to_arrays().values())


def _set(message: _Message, name: str, value: np.ndarray) -> None:
    object.__setattr__(message, name, value)  # frozen dataclasses normalise their arrays once


@dataclass(frozen=True)
class Centres(_Message):
    """The server's centres, sent to every client. z is the first `length` columns of `vectors`
    (not sent twice); g, when present, the rest."""

    vectors: np.ndarray  # [M, L] or [M, 2L] float32: block-normalised z, or z | g (what is matched)
    labels: np.ndarray  # [M] int64: the centres' true labels (the server's validation labels)
    block_sizes: np.ndarray  # [layers] int64: the descriptor layout's block sizes, summing to L

    def __post_init__(self) -> None:
        _set(self, "vectors", np.ascontiguousarray(self.vectors, dtype=np.float32))
        _set(self, "labels", np.asarray(self.labels, dtype=np.int64))
        _set(self, "block_sizes", np.asarray(self.block_sizes, dtype=np.int64))
        rows = len(self.vectors)
        if self.vectors.ndim != 2 or self.labels.shape != (rows,) or self.block_sizes.ndim != 1:
            raise ValueError(f"centres need vectors [M, D] and labels [M]; got {self.vectors.shape}, "
                             f"{self.labels.shape}")
        if self.vectors.shape[1] not in (self.length, 2 * self.length):
            raise ValueError(f"centre vectors of width {self.vectors.shape[1]} fit no layout of length {self.length}")

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def length(self) -> int:
        """L, the length of z."""
        return int(self.block_sizes.sum())

    @property
    def with_gradients(self) -> bool:
        return self.vectors.shape[1] == 2 * self.length

    @property
    def z(self) -> np.ndarray:  # [M, L]
        return self.vectors[:, : self.length]

    @property
    def g(self) -> np.ndarray | None:  # [M, L] or None (fk-features)
        return self.vectors[:, self.length :] if self.with_gradients else None

    def reference(self) -> Reference:
        """The centres as the labelled reference set of the nearest-neighbour pseudo-labels."""
        return Reference(self.z, self.g, self.labels)


@dataclass(frozen=True)
class Candidates(_Message):
    """One client's reply: for each centre its most similar local rows, most similar first."""

    ids: np.ndarray  # [M, K] int64: row positions into the client's unlabelled images; -1 pads
    similarities: np.ndarray  # [M, K] float32: z·z' (+ g·g'), descending per row; -inf where ids is -1

    def __post_init__(self) -> None:
        _set(self, "ids", np.asarray(self.ids, dtype=np.int64))
        _set(self, "similarities", np.asarray(self.similarities, dtype=np.float32))
        if self.ids.ndim != 2 or self.ids.shape != self.similarities.shape:
            raise ValueError(f"candidates need ids and similarities of one shape [M, K]; got {self.ids.shape}, "
                             f"{self.similarities.shape}")

    @property
    def lists_whole_pool(self) -> bool:
        """Every list is padded: the client has fewer than K images, so a larger K adds nothing."""
        return bool((self.ids < 0).any(axis=1).all())


def server_centres(
    model: nn.Module,
    validation: Split,
    to_input: ToInput,
    layers: tuple[str, ...],
    device: torch.device,
    budget: int,
    rng: np.random.Generator,
    with_gradients: bool,
    batch_size: int = 512,
    store: DescriptorStore | None = None,
) -> Centres:
    """The centres of the global model's misses on the validation set, as central FK picks them:
    descriptors with the true labels for g, the miss set (least-confident fallback), and k-centre
    greedy when there are more misses than `budget` (the same single rng draw). `store`'s
    temporaries are released before returning."""
    store = store or DescriptorStore()
    try:
        layout = images_layout(model, tuple(layers), validation.images, to_input, device)
        val = validation_descriptors(model, validation, to_input, layout, device, with_gradients,
                                     batch_size=batch_size, store=store)
        labels = validation.labels.numpy()  # [V]
        vectors = val.vectors(with_gradients)  # [V, D]
        rows = choose_centres(vectors, miss_set(val.logits, labels, fallback_size=budget), budget, rng)  # [M]
        return Centres(vectors=vectors[rows], labels=labels[rows], block_sizes=np.array(layout.sizes))
    finally:
        store.release()


def _check_fit(centres: Centres, pseudo_label: str | None, sizes: tuple[int, ...]) -> None:
    """A client's descriptors must be comparable with the centres': a pseudo-label it can compute,
    g exactly when the centres have g, and the same block sizes."""
    if pseudo_label not in CLIENT_PSEUDO_LABELS:
        raise ValueError(f"a client cannot compute the pseudo-label {pseudo_label!r}; "
                         f"use one of {CLIENT_PSEUDO_LABELS}")
    if (pseudo_label is not None) != centres.with_gradients:
        having = "with" if centres.with_gradients else "without"
        raise ValueError(f"pseudo-label {pseudo_label!r} does not fit centres {having} g")
    if sizes != tuple(centres.block_sizes.tolist()):
        raise ValueError(f"the client's layout {sizes} differs from the centres' {tuple(centres.block_sizes.tolist())}")


def _unpadded_top_k(searcher: search.PoolSearch, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k with an IVF index's nprobe doubled until no list is padded (or the probe is exhaustive),
    so each list holds k real rows as an exact search's does; the server cannot ask for a wider probe."""
    while True:
        similarities, ids = searcher.top_k(queries, k)  # [M, k], [M, k]
        if (ids >= 0).all() or not searcher.widen():
            return similarities, ids


def local_top_k(
    centre_vectors: np.ndarray, pool_vectors: np.ndarray, top_k: int, search_settings: SearchSettings = DEFAULT_SETTINGS
) -> Candidates:
    """For each centre [M, D] its `top_k` most similar rows of `pool_vectors` [U, D] (FAISS via
    common.search, as central matching), padded with -1 / -inf to [M, top_k] when U < top_k."""
    ids = np.full((len(centre_vectors), top_k), -1, dtype=np.int64)  # [M, K]
    similarities = np.full(ids.shape, -np.inf, dtype=np.float32)  # [M, K]
    k = min(top_k, len(pool_vectors))
    if k:
        searcher = search.PoolSearch(pool_vectors, search_settings, queries=len(centre_vectors))
        similarities[:, :k], ids[:, :k] = _unpadded_top_k(searcher, centre_vectors, k)
        similarities[ids < 0] = -np.inf
    return Candidates(ids=ids, similarities=similarities)


def client_candidates(
    model: nn.Module,
    pool_images: Images,
    to_input: ToInput,
    layers: tuple[str, ...],
    device: torch.device,
    centres: Centres,
    top_k: int,
    pseudo_label: str | None = None,
    batch_size: int = 512,
    search_settings: SearchSettings = DEFAULT_SETTINGS,
    store: DescriptorStore | None = None,
) -> Candidates:
    """A client's answer to the centres: describe its unlabelled images with the global model, like
    the centres (z alone for pseudo_label None, fk-features; z | g for "nn", fk-nn, g taken against
    the nearest centre's label), and list each centre's top-K local rows. `store`'s temporaries are
    released before returning."""
    layout = images_layout(model, tuple(layers), pool_images, to_input, device)
    _check_fit(centres, pseudo_label, layout.sizes)
    store = store or DescriptorStore()
    try:
        pool = compute_descriptors(
            model, pool_images, to_input, layout, device, pseudo_label=pseudo_label,
            reference=centres.reference() if pseudo_label is not None else None,
            batch_size=batch_size, description="pool descriptors", store=store, keep_logits=False,
        )
        return local_top_k(centres.vectors, pool.vectors(centres.with_gradients), top_k, search_settings)
    finally:
        store.release()


def merge_candidates(per_client: Mapping[int, Candidates], budget: int) -> tuple[list[tuple[int, int]], bool]:
    """Up to `budget` distinct (client id, local id) pairs, and whether the budget was filled.

    Per centre, all clients' lists are merged by similarity (ties: lower client id, then lower local
    id) and cut to the global top K; then central `rank_major_fill` takes every centre's 1st match
    (most similar first), then the 2nd, and so on. Not filled: ask the clients again with 2K, unless
    every reply `lists_whole_pool` (then the pools hold no more images).
    """
    clients = sorted(per_client)
    shapes = {per_client[client].ids.shape for client in clients}
    if len(shapes) != 1:
        raise ValueError(f"clients must answer the same centres with the same K; got shapes {sorted(shapes)}")
    (_, k), count = shapes.pop(), len(clients)
    ids = np.concatenate([per_client[client].ids for client in clients], axis=1)  # [M, C*K]
    similarities = np.concatenate([per_client[client].similarities for client in clients], axis=1)  # [M, C*K]
    owners = np.broadcast_to(np.repeat(np.arange(count), k), ids.shape)  # [M, C*K] client position
    order = np.lexsort((ids, owners, -similarities), axis=1)[:, :k]  # [M, K] global top K per centre
    codes = np.where(ids >= 0, ids * count + owners, -1)  # one int per (client, local id); -1 pads
    chosen = rank_major_fill(np.take_along_axis(codes, order, axis=1),
                             np.take_along_axis(similarities, order, axis=1), budget)
    pairs = [(clients[int(code % count)], int(code // count)) for code in chosen]
    return pairs, len(pairs) == budget
