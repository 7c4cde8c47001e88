"""Inner-product nearest-neighbour search with FAISS (GPU when faiss-gpu and a GPU exist)."""
from __future__ import annotations

import faiss
import numpy as np


def gpu_available() -> bool:
    return getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def inner_product_index(vectors: np.ndarray) -> faiss.Index:
    """An exact inner-product index over `vectors` [N, D] (float32)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    if gpu_available():
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: similarities [Q, k] (descending) and row ids [Q, k]."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    similarities, ids = index.search(queries, k)
    return similarities, ids.astype(np.int64)
