"""ImageNet (and any ImageFolder-style dataset): files streamed from disk, ResNet-18.

Layout: <root>/train/<class>/<image> and <root>/val/<class>/<image> (the usual torchvision
preparation of ILSVRC-2012). ImageNet cannot be downloaded automatically (its licence needs a
login), so --data-root must point at those folders; default local_data/imagenet.
Protocol (docs/method.md#validation-set-and-biased-pool): the minority classes are a seeded half
of the classes per run, each keeping 1/ir of its images; the validation set is held out of train;
ImageNet's own val split is the test set, never used for acquisition.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from common.datasets import DATASETS, DatasetSpec, Split
from common.naming import LOCAL_DATA
from common.errors import UserError
from common.schedule import Schedule
from imagenet.dali import DaliFolderImages, dali_available
from imagenet.folder import FolderImages, class_folders, evaluation_transform, scan_image_folder
from imagenet.resnet import RESNET18_DESCRIPTOR_LAYERS, ResNet18

# The one place the ImageNet schedule is stated (docs/method.md#training-schedules).
IMAGENET_SCHEDULE = Schedule(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=60,
                             milestones=(30, 50, 57), warmup_epochs=5)
# The FK paper's setting gives no ImageNet rotation schedule: half the supervised one, same optimiser (our choice).
IMAGENET_ROTATION_SCHEDULE = Schedule(lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=30,
                                      milestones=(15, 25, 28), warmup_epochs=2)


def folder_loader(default_root: Path, num_classes: int, crop: int, resize: int) -> Callable[[Path | None, bool], Split]:
    """load(root, train) for <root>/train and <root>/val class folders, decoded lazily
    (DALI on the GPU when available, else DataLoader workers)."""

    def load(root: Path | None, train: bool) -> Split:
        base = Path(root) if root is not None else default_root
        classes = class_folders(base / "train")
        if len(classes) != num_classes:
            raise UserError(f"{base / 'train'} has {len(classes)} class folders, expected {num_classes}")
        folder = base / ("train" if train else "val")
        paths, labels = scan_image_folder(folder, classes)
        source = DaliFolderImages if dali_available() else FolderImages
        return Split(images=source(paths, crop=crop, resize=resize), labels=torch.from_numpy(labels),
                     source=str(folder))

    return load


def image_folder_spec(name: str, num_classes: int, default_root: Path, crop: int = 224, resize: int = 256,
                      **overrides) -> DatasetSpec:
    """A DatasetSpec for an ImageFolder dataset with ResNet-18 and the ImageNet protocol;
    `overrides` replace any default (budget, schedule, val_per_class, ...)."""
    settings = dict(
        name=name, num_classes=num_classes, loader=folder_loader(default_root, num_classes, crop, resize),
        model=lambda classes, mc_dropout: ResNet18(classes, mc_dropout),
        descriptor_layers=RESNET18_DESCRIPTOR_LAYERS, default_layer_set="l768", classifier="fc",
        penultimate="avgpool", schedule=IMAGENET_SCHEDULE, pretrain_schedule=IMAGENET_ROTATION_SCHEDULE,
        evaluation_transform=evaluation_transform(crop, resize),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        budget=64000, iterations=5, val_per_class=128, top_k=128, inference_batch_size=256,
        default_imbalance=10, minority_rule="seeded-half", imbalance_rule="per-class",
        description=f"{name}: image folders under <root>/train and <root>/val, streamed from disk",
    )
    return DatasetSpec(**{**settings, **overrides})


DATASETS.register("imagenet", image_folder_spec(
    "imagenet", 1000, LOCAL_DATA / "imagenet",
    description="ImageNet ILSVRC-2012 class folders (<root>/train, <root>/val), not downloadable",
))
