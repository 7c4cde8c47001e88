"""Inner-product nearest-neighbour search with FAISS or PyTorch (docs/method.md#matching, step 3).

Exact (IndexFlatIP) by default, on GPU when faiss-gpu and a GPU exist; on a CUDA device without faiss-gpu
(CUDA 13 machines: faiss-gpu wheels are CUDA 12 builds) the exact chunked PyTorch search of
common/torch_search.py on that device ("torch", which any device may also ask for). On CPU, pools of
`ivf_threshold` rows or more ("auto"), or any pool with index="ivf", get an approximate
inverted-file index (IndexIVFFlat, inner product): k-means lists trained on a seeded sample,
`nprobe` of them searched per query. Vectors are added in chunks, so a float64 or
non-contiguous input (a memmap column slice) is never copied whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from common.storage import float32_chunks

INDEX_KINDS = ("auto", "exact", "ivf", "torch")
ADD_CHUNK = 65536  # rows converted to contiguous float32 and added at a time
MIN_POINTS_PER_LIST = 39  # FAISS k-means warns below 39 training points per centroid


@dataclass(frozen=True)
class SearchSettings:
    """Which index the matching uses.

    index: "auto", "exact", "ivf" or "torch". "auto" uses IVF only on CPU, for pools of `ivf_threshold`
    rows or more searched by at least `ivf_queries_per_list` x nlist queries: building the lists
    costs about N x nlist dot products, which only many queries pay back (benchmarks/matching.py:
    at 500k x 80, 4000 queries run 1.9x slower with IVF, 64000 queries 5.4x faster).
    nlist: IVF lists (None: about 4·sqrt(N)); nprobe: lists searched per query; train_sample:
    at most this many rows train the IVF lists. device: where the acquisition runs ("cuda" makes
    "auto" and "exact" search with PyTorch on the GPU when faiss has none).
    """

    index: str = "auto"
    nlist: int | None = None
    nprobe: int = 16
    ivf_threshold: int = 200_000
    train_sample: int = 100_000
    ivf_queries_per_list: float = 4.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.index not in INDEX_KINDS:
            raise ValueError(f"unknown search index {self.index!r}; choose one of {', '.join(INDEX_KINDS)}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be at least 1, got {self.nlist}")
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {self.nprobe}")
        if self.ivf_threshold < 0:
            raise ValueError(f"ivf_threshold must be non-negative, got {self.ivf_threshold}")
        if self.train_sample < 1:
            raise ValueError(f"train_sample must be at least 1, got {self.train_sample}")

    def uses_ivf(self, rows: int, gpu: bool, queries: int | None = None) -> bool:
        """Whether a pool of `rows` vectors searched by `queries` vectors (None: many) gets the IVF
        index (an empty pool never does)."""
        if rows == 0 or self.index == "exact":
            return False
        if self.index == "ivf":
            return True
        enough_queries = queries is None or queries >= self.ivf_queries_per_list * ivf_list_count(rows, self)
        return not gpu and rows >= self.ivf_threshold and enough_queries


DEFAULT_SETTINGS = SearchSettings()  # exact search below 200,000 rows or with few queries

# faiss 1.15 searches flat indexes without BLAS below 128,000 (queries x dimensions); measured here,
# 125 queries over 100k x 768 take 3.1 s that way and 0.33 s with BLAS (the pre-1.15 threshold of 20).
BLAS_THRESHOLD = 20


def gpu_available() -> bool:
    return getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def ivf_list_count(rows: int, settings: SearchSettings) -> int:
    """IVF lists for `rows` vectors: settings.nlist, else round(4·sqrt(N)) clamped to [1, T/39]
    where T = min(N, train_sample) training rows, so k-means gets >= 39 points per list."""
    trained = max(1, min(rows, settings.train_sample))
    if settings.nlist is not None:
        return min(settings.nlist, trained)  # k-means needs at least one training point per list
    return int(np.clip(round(4 * np.sqrt(rows)), 1, max(1, trained // MIN_POINTS_PER_LIST)))


def _training_sample(vectors: np.ndarray, size: int, rng_seed: int) -> np.ndarray:
    """A seeded random sample of `size` rows as contiguous float32 [size, D], gathered in chunks."""
    if size >= len(vectors):
        rows = np.arange(len(vectors))
    else:
        rows = np.sort(np.random.default_rng(rng_seed).choice(len(vectors), size=size, replace=False))
    sample = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), ADD_CHUNK):
        sample[start : start + ADD_CHUNK] = vectors[rows[start : start + ADD_CHUNK]]
    return sample


def build_index(
    vectors: np.ndarray, settings: SearchSettings = DEFAULT_SETTINGS, rng_seed: int = 0, gpu: bool | None = None,
    queries: int | None = None,
) -> faiss.Index:
    """An inner-product index over `vectors` [N, D] (any float dtype, memmap or strided view).

    gpu: place an exact index on the GPU (None: when faiss has GPUs). IVF stays on CPU.
    queries: how many vectors will be searched (None: many), for the "auto" choice.
    """
    rows, dim = vectors.shape
    gpu = gpu_available() if gpu is None else gpu
    if settings.uses_ivf(rows, gpu, queries):
        nlist = ivf_list_count(rows, settings)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = rng_seed
        index.train(_training_sample(vectors, min(rows, settings.train_sample), rng_seed))
        index.nprobe = min(settings.nprobe, nlist)
    else:
        index = faiss.IndexFlatIP(dim)
        if gpu:
            index = faiss.index_cpu_to_all_gpus(index)
    for _, chunk in float32_chunks(vectors, ADD_CHUNK):
        index.add(chunk)
    return index


def inner_product_index(vectors: np.ndarray) -> faiss.Index:
    """An exact inner-product index over `vectors` [N, D] (GPU when available)."""
    return build_index(vectors, SearchSettings(index="exact"))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: similarities [Q, k] (descending) and row ids [Q, k].

    An IVF index pads with id -1 when the probed lists hold fewer than k vectors.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    similarities, ids = index.search(queries, k)
    return similarities, ids.astype(np.int64)


def widen_probe(index: faiss.Index) -> bool:
    """Double an IVF index's nprobe (up to nlist); False for an exact or already exhaustive index."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or ivf.nprobe >= ivf.nlist:
        return False
    ivf.nprobe = min(2 * ivf.nprobe, ivf.nlist)
    return True


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product without an index: the pool is read in float32 chunks."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start, chunk in float32_chunks(vectors, ADD_CHUNK):
        similarities, ids = faiss.knn(queries, chunk, min(k, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(similarities, np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    return heap.D, heap.I.astype(np.int64)


def recall_at_k(exact_ids: np.ndarray, approx_ids: np.ndarray) -> float:
    """Mean over queries of the fraction of the exact top-k ids [Q, k] found in the approximate
    top-k ids [Q, k'] (padding ids < 0 never count). Queries with no exact id are left out."""
    exact_ids, approx_ids = np.asarray(exact_ids), np.asarray(approx_ids)
    fractions = []
    for start in range(0, len(exact_ids), 4096):  # [4096, k, k'] booleans at a time
        exact, approx = exact_ids[start : start + 4096], approx_ids[start : start + 4096]
        valid = exact >= 0
        found = ((exact[:, :, None] == approx[:, None, :]).any(axis=2) & valid).sum(axis=1)
        counted = valid.sum(axis=1) > 0
        fractions.append(found[counted] / valid.sum(axis=1)[counted])
    fractions = np.concatenate(fractions) if fractions else np.empty(0)
    return float(fractions.mean()) if len(fractions) else 1.0


def sample_recall(
    vectors: np.ndarray, queries: np.ndarray, k: int, settings: SearchSettings, sample: int = 1000, seed: int = 0
) -> float:
    """Recall@k of the index `settings` builds over `vectors`, against exact search, measured on
    a seeded sample of at most `sample` rows of `queries`."""
    rows = np.random.default_rng(seed).choice(len(queries), size=min(sample, len(queries)), replace=False)
    chosen = np.asarray(queries[np.sort(rows)])
    _, approx_ids = search(build_index(vectors, settings, rng_seed=seed), chosen, k)
    _, exact_ids = exact_top_k(vectors, chosen, k)
    return recall_at_k(exact_ids, approx_ids)


def uses_torch(settings: SearchSettings, faiss_gpu: bool) -> bool:
    """Whether the search runs in PyTorch: asked for ("torch"), or exact search on a CUDA device that faiss
    cannot use (IVF, asked for, stays FAISS on the CPU)."""
    if settings.index == "torch":
        return True
    return settings.device.startswith("cuda") and not faiss_gpu and settings.index != "ivf"


class PoolSearch:
    """Top-k search over a pool, by the cheapest path that keeps memory bounded:
    an IVF index (see SearchSettings), an exact index (GPU when available), exact chunked PyTorch search
    on a CUDA device faiss cannot use, or, for a disk-backed (memmap) pool on CPU, an exact scan of
    float32 chunks that never loads the pool."""

    def __init__(self, pool: np.ndarray, settings: SearchSettings = DEFAULT_SETTINGS, queries: int | None = None,
                 rng_seed: int = 0) -> None:
        gpu = gpu_available()
        self.pool, self.device = pool, settings.device
        self.torch = uses_torch(settings, gpu)
        self.streamed = self.torch or (isinstance(pool, np.memmap) and not gpu
                                       and not settings.uses_ivf(len(pool), gpu, queries))
        self.index = None if self.streamed else build_index(pool, settings, rng_seed, gpu, queries)
        self.approximate = self.index is not None and faiss.try_extract_index_ivf(self.index) is not None

    def top_k(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Similarities [Q, k] (descending) and pool rows [Q, k] (-1 pads a short IVF list)."""
        if self.torch:
            from common.torch_search import torch_top_k  # noqa: PLC0415  (torch: only where it searches)

            return torch_top_k(self.pool, queries, k, self.device)
        return exact_top_k(self.pool, queries, k) if self.streamed else search(self.index, queries, k)

    def widen(self) -> bool:
        """Search more IVF lists next time; False when the search is already exhaustive."""
        return self.index is not None and widen_probe(self.index)
