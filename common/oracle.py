"""The label store: the one place a pool label is read, and only for an image that was acquired.

Central runs, federated clients (the annotator sits with the client) and asynchronous workers all
learn labels through an Oracle, so "only acquired images' labels are ever read" holds by
construction. Strategies that cheat on purpose (the fk-oracle ablation) read the pool's labels
directly and say so in their name.
"""
from __future__ import annotations

import numpy as np
import torch


class LabelRequestError(ValueError):
    """A label asked for an image that was not acquired, or an image acquired twice."""


class Oracle:
    """Reveals the true label of pool positions as they are acquired; remembers what it revealed."""

    def __init__(self, labels: torch.Tensor, revealed: np.ndarray | None = None) -> None:
        """`revealed`: positions labelled earlier (a resumed run), in the order they were acquired."""
        self._labels = labels  # [N] int64, the pool's true labels: private to the oracle
        self._revealed = np.zeros(len(labels), dtype=bool)
        self._order: list[np.ndarray] = []  # revealed positions, request by request
        if revealed is not None and len(revealed):
            self.reveal(revealed)

    def __len__(self) -> int:
        return len(self._labels)

    def reveal(self, positions: np.ndarray) -> torch.Tensor:
        """Acquire `positions` (distinct, never acquired before) and return their labels [B]."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(np.unique(positions)) != len(positions):
            raise LabelRequestError("the same image was asked for twice in one request")
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self._labels)):
            raise LabelRequestError(f"positions outside the pool of {len(self._labels)} images")
        again = positions[self._revealed[positions]]
        if len(again):
            raise LabelRequestError(f"{len(again)} images were already labelled (e.g. position {again[0]})")
        self._revealed[positions] = True
        self._order.append(positions)
        return self._labels[torch.from_numpy(positions)]

    def labels(self, positions: np.ndarray) -> torch.Tensor:
        """Labels [B] of already acquired positions; asking for any other image is refused."""
        positions = np.asarray(positions, dtype=np.int64)
        unknown = positions[~self._revealed[positions]]
        if len(unknown):
            raise LabelRequestError(f"{len(unknown)} images were never acquired (e.g. position {unknown[0]})")
        return self._labels[torch.from_numpy(positions)]

    @property
    def labelled(self) -> np.ndarray:
        """Positions whose labels were revealed, in the order they were acquired (training sees them in
        this order, so a resumed run trains exactly like an uninterrupted one)."""
        if len(self._order) > 1:
            self._order = [np.concatenate(self._order)]
        return self._order[0].copy() if self._order else np.empty(0, dtype=np.int64)

    def counts(self, num_classes: int) -> np.ndarray:
        """Labelled images per class [C] (what a federated client may share)."""
        revealed = self._labels[torch.from_numpy(self._revealed)]
        return np.bincount(revealed.numpy(), minlength=num_classes)
