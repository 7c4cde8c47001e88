"""Optimiser schedules (docs/method.md#training-schedules). Each dataset states its own in its spec."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Schedule:
    """SGD with step decay: lr x gamma at each milestone epoch, optional linear warm-up."""

    lr: float
    momentum: float
    batch_size: int
    epochs: int
    milestones: tuple[int, ...]
    weight_decay: float = 0.0
    gamma: float = 0.1
    warmup_epochs: int = 0

    def with_epochs(self, epochs: int) -> "Schedule":
        """The same schedule stretched or shrunk to `epochs`, milestones scaled proportionally."""
        if epochs == self.epochs:
            return self
        scale = epochs / self.epochs
        milestones = tuple(sorted({max(1, round(m * scale)) for m in self.milestones if round(m * scale) < epochs}))
        warmup = min(self.warmup_epochs, max(0, epochs - 1))
        return replace(self, epochs=epochs, milestones=milestones, warmup_epochs=warmup)

    def lr_at(self, epoch: int) -> float:
        """Learning rate for a 0-based epoch."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        decays = sum(1 for m in self.milestones if epoch >= m)
        return self.lr * self.gamma**decays
