"""Dataset specifications and their registry.

A dataset folder (mnist/, svhn/, ...) registers a `DatasetSpec`; `common/` only ever looks
datasets up by name here, so adding a dataset touches one new folder and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from common.registry import Registry
from common.schedule import Schedule


@dataclass(frozen=True)
class Split:
    """One split of a dataset: images (a uint8 tensor [N, C, H, W], or an ImageSource decoding files on
    demand) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset.

    `load(root, train)` returns a `Split`; `root` is None when the user gave no --data-root and
    the loader should look in its usual places. `model(num_classes, mc_dropout)` builds the
    network; `descriptor_layers` maps a layer-set name to the module names whose activations
    form the descriptors (SPEC section 4); `classifier` is the final layer's module name, the
    one part not transferred from rotation pretraining; `penultimate` the layer feeding it.
    """

    name: str
    num_classes: int
    load: Callable[[Path | None, bool], Split]
    model: Callable[[int, bool], nn.Module]
    descriptor_layers: dict[str, tuple[str, ...]]
    default_layer_set: str
    classifier: str
    penultimate: str  # module whose output feeds the classifier (coreset, t-SNE)
    schedule: Schedule
    pretrain_schedule: Schedule
    mean: tuple[float, ...]
    std: tuple[float, ...]
    budget: int
    iterations: int
    val_per_class: int
    top_k: int = 32
    inference_batch_size: int = 512  # forward/descriptor batches (not training); memory-bound on GPU
    default_imbalance: float = 1.0
    minority_rule: str = "upper-half"  # which classes are the minority: upper-half | seeded-half (per run)
    imbalance_rule: str = "joint"  # how they are thinned: common.splits.IMBALANCE_RULES
    description: str = ""
    extra: dict = field(default_factory=dict)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 network input."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std


DATASETS: Registry[DatasetSpec] = Registry("dataset")

# Where datasets, runs and plots live unless the user says otherwise (git-ignored).
LOCAL_DATA = Path(__file__).resolve().parent.parent / "local_data"
