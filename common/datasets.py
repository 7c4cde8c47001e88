"""Dataset specifications and their registry.

A dataset folder (mnist/, svhn/, ...) registers a `DatasetSpec`; `common/` only ever looks
datasets up by name here, so adding a dataset touches one new folder and nothing else.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from common.errors import UserError
from common.registry import Registry
from common.schedule import Schedule


@dataclass(frozen=True)
class Split:
    """One split of a dataset: images (a uint8 tensor [N, C, H, W], or an ImageSource decoding files on
    demand) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str = ""  # the file(s) or folder it was read from, named in error messages

    def __len__(self) -> int:
        return len(self.labels)


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(size) for size in shape)


def check_split(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                image_shape: tuple[int, int, int] | None, source: str) -> None:
    """A one-line UserError naming `source` (the files read) unless there are images, one int64 label per
    image in 0..num_classes-1, and (tensors) uint8 images of `image_shape` (C, H, W; None: any size).

    Images decoded on demand (an ImageSource) are checked for count only: their files are read later.
    """

    def fail(problem: str) -> None:
        raise UserError(f"{source}: {problem}")

    if len(images) == 0:
        fail("no images")
    if labels.dtype != torch.int64 or labels.ndim != 1:
        fail(f"labels should be int64 [N], got {str(labels.dtype).removeprefix('torch.')} {list(labels.shape)}")
    if len(labels) != len(images):
        fail(f"{len(images)} images but {len(labels)} labels")
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            fail(f"images are {str(images.dtype).removeprefix('torch.')}, expected uint8")
        if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
            fail(f"images are {_shape_text(images.shape[1:])}, expected {_shape_text(image_shape)}")
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if len(outside):
        low, high = int(outside.min()), int(outside.max())
        values = f"label {low}" if low == high else f"labels {low}..{high}"
        fail(f"{values} outside 0..{num_classes - 1} ({len(outside)} of {len(labels)} images)")


def join_splits(parts: Sequence[Split]) -> Split:
    """Splits read from several files, in order -> one Split (one contiguous copy of tensor images)."""
    if len(parts) == 1:
        only = parts[0]
        return replace(only, images=only.images.contiguous()) if isinstance(only.images, torch.Tensor) else only
    return Split(images=torch.cat([part.images for part in parts]), labels=torch.cat([part.labels for part in parts]),
                 source=", ".join(part.source for part in parts))


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset.

    `load(root, train)` returns a `Split`; `root` is None when the user gave no --data-root and
    the loader should look in its usual places. It calls `loader(root, train)`, which reads the files
    into a Split or one Split per file, checks each (`check_split`: every dataset passes through it)
    and joins them in order. `model(num_classes, mc_dropout)` builds the
    network; `descriptor_layers` maps a layer-set name to the module names whose activations
    form the descriptors (docs/method.md#descriptors); `classifier` is the final layer's module name, the
    one part not transferred from rotation pretraining; `penultimate` the layer feeding it.
    """

    name: str
    num_classes: int
    loader: Callable[[Path | None, bool], Split | Sequence[Split]]
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
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) every image has; None: not checked (resized)
    # uint8 [C, H, W] of any size -> the model's evaluation input, for datasets without an image_shape
    # (image folders: resize + centre crop); predict.py reads a user's files through it
    evaluation_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)

    def load(self, root: Path | None, train: bool) -> Split:
        """The train or test split, its contents checked (a damaged file is a one-line UserError naming it)."""
        loaded = self.loader(root, train)
        parts = [loaded] if isinstance(loaded, Split) else list(loaded)
        for part in parts:
            check_split(part.images, part.labels, self.num_classes, self.image_shape,
                        part.source or f"the {self.name} {'train' if train else 'test'} split")
        return join_splits(parts)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 network input."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std


DATASETS: Registry[DatasetSpec] = Registry("dataset")
