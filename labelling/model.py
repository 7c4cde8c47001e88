"""The network of a labelling project and the images it reads, as a DatasetSpec the AL step already takes.

`--model` picks a family (its name and smallest image size: labelling.project.SMALLEST_SIDE); the project's
classes and `--image-size` fix the rest:
  lenet     LeNet, greyscale, normalised as MNIST, no augmentation (small greyscale images: digits, glyphs)
  resnet10  ResNet-10 (SVHN's / CIFAR's), RGB, ImageNet normalisation, flip + random resized crop
  resnet18  torchvision's ResNet-18, RGB, ImageNet normalisation, flip + random resized crop; starts from
            saved torchvision weights with --weights
Schedules and descriptor layers are the datasets' (docs/method.md#training-schedules): LeNet's is MNIST's,
the ResNets' CIFAR's (the ImageNet schedule's 60 epochs of 128-image batches is for a million labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from cifar import CIFAR_ROTATION_SCHEDULE, CIFAR_SCHEDULE
from common import storage
from common.datasets import DatasetSpec, Split
from common.errors import UserError
from common.schedule import Schedule
from imagenet.folder import FolderImages, evaluation_transform
from imagenet.resnet import RESNET18_DESCRIPTOR_LAYERS, ResNet18
from mnist import LENET_ROTATION_SCHEDULE, LENET_SCHEDULE
from mnist.lenet import LENET_DESCRIPTOR_LAYERS, LeNet
from svhn.resnet import RESNET10_DESCRIPTOR_LAYERS, ResNet10

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclass(frozen=True)
class ModelFamily:
    """What `--model NAME` means."""

    build: Callable[[int, bool, int], nn.Module]  # (classes, mc_dropout, image size) -> network
    mode: str  # PIL mode the images are decoded in: "L" or "RGB"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_training: bool
    schedule: Schedule
    pretrain_schedule: Schedule
    descriptor_layers: dict[str, tuple[str, ...]]
    default_layer_set: str
    classifier: str
    penultimate: str
    inference_batch_size: int


MODEL_FAMILIES = {
    "lenet": ModelFamily(
        build=lambda classes, mc_dropout, size: LeNet(classes, mc_dropout, image_size=size, channels=1),
        mode="L", mean=MNIST_MEAN, std=MNIST_STD, augment_training=False, schedule=LENET_SCHEDULE,
        pretrain_schedule=LENET_ROTATION_SCHEDULE, descriptor_layers=LENET_DESCRIPTOR_LAYERS,
        default_layer_set="l80", classifier="fc2", penultimate="fc1", inference_batch_size=2048),
    "resnet10": ModelFamily(
        build=lambda classes, mc_dropout, size: ResNet10(classes, mc_dropout),
        mode="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment_training=True, schedule=CIFAR_SCHEDULE,
        pretrain_schedule=CIFAR_ROTATION_SCHEDULE, descriptor_layers=RESNET10_DESCRIPTOR_LAYERS,
        default_layer_set="l768", classifier="fc", penultimate="avgpool", inference_batch_size=512),
    "resnet18": ModelFamily(
        build=lambda classes, mc_dropout, size: ResNet18(classes, mc_dropout),
        mode="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD, augment_training=True, schedule=CIFAR_SCHEDULE,
        pretrain_schedule=CIFAR_ROTATION_SCHEDULE, descriptor_layers=RESNET18_DESCRIPTOR_LAYERS,
        default_layer_set="l768", classifier="fc", penultimate="avgpool", inference_batch_size=256),
}


def project_spec(model: str, classes: list[str], image_size: int) -> DatasetSpec:
    """The DatasetSpec of a project: its network, preprocessing and schedules (nothing is loaded through it:
    the images are the project's, see project_images)."""
    family = MODEL_FAMILIES[model]
    channels = len(family.mean)

    def no_loader(_root: Path | None, _train: bool) -> Split:
        raise UserError("a labelling project's images are read by label.py, not loaded as a dataset")

    return DatasetSpec(
        name=f"project-{model}", num_classes=len(classes), loader=no_loader,
        model=lambda num_classes, mc_dropout: family.build(num_classes, mc_dropout, image_size),
        descriptor_layers=family.descriptor_layers, default_layer_set=family.default_layer_set,
        classifier=family.classifier, penultimate=family.penultimate, schedule=family.schedule,
        pretrain_schedule=family.pretrain_schedule, mean=family.mean, std=family.std, budget=1, iterations=1,
        val_per_class=0, inference_batch_size=family.inference_batch_size,
        image_shape=(channels, image_size, image_size),
        evaluation_transform=evaluation_transform(image_size, image_size),
    )


def project_images(root: Path, paths: list[str], model: str, image_size: int, workers: int | None = None,
                   ) -> FolderImages:
    """The project's images (paths relative to `root`), decoded on demand: the shorter side resized to
    `image_size` and the centre cropped (whole square images stay whole)."""
    family = MODEL_FAMILIES[model]
    files = np.asarray([str(root / path).encode() for path in paths])
    return FolderImages(files, crop=image_size, resize=image_size, workers=workers, mode=family.mode,
                        augment_training=family.augment_training)


def is_weights_name(text: str) -> bool:
    """A torchvision weights name (e.g. ResNet18_Weights.IMAGENET1K_V1) rather than a file."""
    from torchvision.models import get_weight

    try:
        get_weight(text)
    except (ValueError, KeyError, AttributeError):
        return False
    return True


def saved_weights(source: str, progress: bool = False) -> dict:
    """The state dict `--weights` names: a file, or torchvision's weights by name (downloaded into torch's cache
    the first time: this needs the internet, and never ran here)."""
    if Path(source).is_file():
        return storage.load_checkpoint(Path(source))
    from torchvision.models import get_weight

    try:
        return get_weight(source).get_state_dict(progress=progress)
    except (OSError, RuntimeError) as error:  # no internet, a broken download
        raise UserError(f"cannot download the weights {source} ({error}); save them to a file where the "
                        "internet is and give its path") from None


def starting_weights(spec: DatasetSpec, source: str, seed_model: nn.Module, progress: bool = False,
                     ) -> dict[str, torch.Tensor]:
    """`seed_model`'s weights with every tensor that the saved state dict `--weights` gives (a file, or a
    torchvision weights name such as ResNet18_Weights.IMAGENET1K_V1) holds at the same name and shape; the
    classifier stays the project's. Weights that share nothing with the network are a one-line error."""
    saved = saved_weights(source, progress)
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]
    if not isinstance(saved, dict) or not all(isinstance(value, torch.Tensor) for value in saved.values()):
        raise UserError(f"--weights {source} is not a state dict (a mapping of names to tensors)")
    target = seed_model.state_dict()
    prefix = spec.classifier + "."
    shared = {name: value for name, value in saved.items()
              if name in target and not name.startswith(prefix) and value.shape == target[name].shape}
    if not shared:
        raise UserError(f"--weights {source} shares no weight with the project's network (names and shapes differ)")
    return {**target, **shared}
