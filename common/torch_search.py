"""Exact top-k inner-product search by chunked matrix products in PyTorch: FK's matching on any CUDA machine,
faiss-gpu or not (faiss-gpu wheels are CUDA 12 builds), and on the CPU for tests.

The pool is streamed in chunks of `pool_chunk` rows (a memmapped descriptor store never loads whole) and the
queries in blocks sized so one block's score matrix stays under `score_bytes`; memory is bounded whatever the
pool. With `approximate` (bfloat16, the default on CUDA, where it runs about 3x faster) each chunk's
candidates are found from bfloat16 scores and re-ranked in float32, and the result is still exact: a
query whose bfloat16 shortlist cannot be proven to hold its float32 top-k (the bound below) is scored again
in float32 on that chunk. Ties: equal scores are ordered by pool row, lowest first (FAISS's flat index does
the same in practice, but does not promise it).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from common.storage import float32_chunks

POOL_CHUNK = 65_536
SCORE_BYTES = 1 << 28  # one query block's [block, chunk] float32 scores: 256 MiB
CANDIDATE_MARGIN = 32  # bfloat16 candidates beyond k per chunk and query
# |bf16 score - fp32 score| <= BOUND x ||q|| x ||p||: bfloat16's unit roundoff is 2^-9, so rounding both inputs
# costs at most 2^-8 of sum |q_i p_i| <= ||q|| ||p||, the bfloat16 output 2^-9 of |score| more, float32
# accumulation (reduced-precision reductions are switched off) next to nothing: 2^-7 holds with room.
BFLOAT16_BOUND = 2.0**-7


def _merge(best_scores: torch.Tensor, best_ids: torch.Tensor, scores: torch.Tensor, ids: torch.Tensor, k: int,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of two candidate lists [B, *], by score, then lowest id (ids < 0 are empty slots)."""
    scores, ids = torch.cat([best_scores, scores], dim=1), torch.cat([best_ids, ids], dim=1)
    by_id = torch.argsort(torch.where(ids < 0, torch.iinfo(torch.int64).max, ids), dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, by_score), ids.gather(1, by_score)


def _block_top(queries: torch.Tensor, chunk: torch.Tensor, chunk_low: torch.Tensor | None, k: int,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact float32 top-min(k, C) of a query block [B, D] over a pool chunk [C, D]: (scores, chunk rows)."""
    take = min(k, len(chunk))
    if chunk_low is None:
        scores = queries @ chunk.T
        top = scores.topk(take, dim=1)
        return top.values, top.indices
    candidates = min(len(chunk), k + CANDIDATE_MARGIN)
    shortlist = (queries.to(torch.bfloat16) @ chunk_low.T).float().topk(candidates, dim=1)
    rows = shortlist.indices
    exact = torch.einsum("bd,bcd->bc", queries, chunk[rows])  # float32 re-rank of the shortlist
    top = exact.topk(take, dim=1)
    scores, found = top.values, rows.gather(1, top.indices)
    if candidates < len(chunk):
        # a row outside the shortlist scores at most (its bf16 score + error) <= (last bf16 candidate + error)
        error = BFLOAT16_BOUND * queries.norm(dim=1) * chunk.norm(dim=1).max()
        unproven = scores[:, -1] < shortlist.values[:, -1] + error
        if unproven.any():
            again = (queries[unproven] @ chunk.T).topk(take, dim=1)
            scores[unproven], found[unproven] = again.values, again.indices
    return scores, found


def torch_top_k(pool: np.ndarray, queries: np.ndarray, k: int, device: torch.device | str = "cpu",
                approximate: bool | None = None, pool_chunk: int = POOL_CHUNK, score_bytes: int = SCORE_BYTES,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product of every query [Q, D] over `pool` [N, D] (any float dtype, a memmap):
    similarities [Q, k] (descending, float32) and pool rows [Q, k] (-1 pads when N < k).

    approximate: bfloat16 shortlists re-ranked in float32 (None: on CUDA only); the result is exact either way.
    """
    device = torch.device(device)
    approximate = device.type == "cuda" if approximate is None else approximate
    matmul = torch.backends.cuda.matmul
    reduced = matmul.allow_bf16_reduced_precision_reduction
    matmul.allow_bf16_reduced_precision_reduction = False  # the error bound assumes float32 accumulation
    try:
        return _top_k(pool, queries, k, device, approximate, pool_chunk, score_bytes)
    finally:
        matmul.allow_bf16_reduced_precision_reduction = reduced


def _top_k(pool: np.ndarray, queries: np.ndarray, k: int, device: torch.device, approximate: bool, pool_chunk: int,
           score_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    query_tensor = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    count = len(query_tensor)
    best_scores = torch.full((count, k), -math.inf, device=device)
    best_ids = torch.full((count, k), -1, dtype=torch.int64, device=device)
    block = max(1, score_bytes // (4 * max(1, min(pool_chunk, len(pool)))))
    for start, rows in float32_chunks(pool, pool_chunk):
        chunk = torch.from_numpy(rows).to(device, non_blocking=True)
        chunk_low = chunk.to(torch.bfloat16) if approximate else None
        for first in range(0, count, block):
            part = slice(first, first + block)
            scores, found = _block_top(query_tensor[part], chunk, chunk_low, k)
            best_scores[part], best_ids[part] = _merge(best_scores[part], best_ids[part], scores, found + start, k)
    return best_scores.cpu().numpy(), best_ids.cpu().numpy()
