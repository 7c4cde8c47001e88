"""Each worker's shard of the pool: disjoint sets of pool positions that cover the pool.

RS: a seeded random split into equal parts (sizes differ by at most one), as AAL's workers.
DS: k-means (k = workers) on the penultimate-layer features of the run's initial model, so each worker
holds similar-looking images, like annotators who each see one kind of data.
"""
from __future__ import annotations

import numpy as np
import torch

from common.datasets import Split
from common.gen_descr import layer_features
from common.seeding import numpy_rng, torch_seed
from common.train import ToInput


def random_shards(pool_size: int, workers: int, rng: np.random.Generator) -> list[np.ndarray]:
    """RS: a random permutation of the pool cut into `workers` near-equal parts, each sorted."""
    return [np.sort(part) for part in np.array_split(rng.permutation(pool_size), workers)]


def clustered_shards(features: np.ndarray, workers: int, seed: int) -> list[np.ndarray]:
    """DS: the k-means clusters of `features` [N, D] (k = workers), as sorted positions."""
    from sklearn.cluster import KMeans  # noqa: PLC0415  (scikit-learn loads only for DS)

    kmeans = KMeans(n_clusters=workers, n_init=3, random_state=seed % (2**32))
    assignment = kmeans.fit_predict(np.asarray(features, dtype=np.float64))
    return [np.flatnonzero(assignment == worker) for worker in range(workers)]


def make_shards(kind: str, pool: Split, workers: int, seed: int, model: torch.nn.Module, to_input: ToInput,
                feature_layer: str, device: torch.device, batch_size: int) -> list[np.ndarray]:
    """The run's shards: RS from the run's seed, DS from `model`'s `feature_layer` features of the pool."""
    if kind == "RS":
        return random_shards(len(pool), workers, numpy_rng(seed, "shards"))
    features, _ = layer_features(model, pool.images, to_input, feature_layer, device, batch_size)
    return clustered_shards(features, workers, torch_seed(seed, "shards"))
