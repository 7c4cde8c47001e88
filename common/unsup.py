"""Stage 1: rotation self-supervised pretraining on the unlabelled pool (docs/method.md#rotation-pretraining).

Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations" (ICLR
2018): each batch is shown at 0, 90, 180 and 270 degrees and the network predicts which.
Square inputs are assumed (a 90 degree turn swaps height and width).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from common.images import Images, image_batches
from common.schedule import Schedule
from common.seeding import numpy_rng
from common.train import ToInput, mixed_precision, model_input, place, train_model

ROTATIONS = 4
CHECK_IMAGES = 1000  # pool images the best epoch is picked on when no validation set is given


def pool_check_positions(pool_size: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of pool images to pick the best rotation epoch on, for runs with no
    validation set (the cold start, label.py): rotation labels need no annotator."""
    return np.sort(numpy_rng(seed, "rotation-check").permutation(pool_size)[:CHECK_IMAGES])


def rotate_batch(x: torch.Tensor, _labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C, H, W] -> the batch at 0/90/180/270 degrees [4B, C, H, W] and rotation targets [4B]."""
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return rotated, targets


@torch.no_grad()
def rotation_accuracy(
    model: nn.Module, images: Images, to_input: ToInput, device: torch.device, batch_size: int = 512
) -> float:
    """Share of (image, rotation) pairs whose rotation the model predicts correctly."""
    place(model, device).eval()
    correct = 0
    for _, raw in image_batches(images, batch_size, device):
        x, targets = rotate_batch(model_input(to_input, raw, device))
        with mixed_precision(device):
            correct += int((model(x).argmax(dim=1) == targets).sum())
    return correct / (ROTATIONS * len(images))


def pretrain_rotation(
    model: nn.Module,
    pool_images: Images,
    val_images: Images,
    schedule: Schedule,
    to_input: ToInput,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], float]:
    """Train a 4-way `model` on the pool's rotations; return the weights of the epoch with the
    best rotation accuracy on the validation images, and that accuracy."""
    best: dict = {"accuracy": -1.0, "state": None}

    def keep_best(_epoch: int) -> None:
        accuracy = rotation_accuracy(model, val_images, to_input, device)
        if accuracy > best["accuracy"]:
            best.update(accuracy=accuracy, state=copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}))

    no_labels = torch.zeros(len(pool_images), dtype=torch.long)
    train_model(
        model, pool_images, no_labels, schedule, to_input, seed, device, progress,
        description="rotation pretraining", batch_transform=rotate_batch, on_epoch_end=keep_best,
    )
    return best["state"], best["accuracy"]


def transfer_weights(
    pretrained: dict[str, torch.Tensor], target: dict[str, torch.Tensor], classifier: str
) -> dict[str, torch.Tensor]:
    """`target` with every weight replaced by the pretrained one except the classifier's."""
    prefix = classifier + "."
    return {key: (value if key.startswith(prefix) else pretrained[key]) for key, value in target.items()}
