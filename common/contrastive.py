"""SimCLR-style contrastive pretraining on the unlabelled pool: the second self-supervised start
(`--unsupervised 2`; docs/method.md#contrastive-pretraining).

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (ICML 2020): two random
augmentations of every image of a batch, the network's penultimate features through a small projection
head (Linear, ReLU, Linear), and the NT-Xent loss: each view must pick its partner out of the other 2B - 1
views by cosine similarity at temperature tau. The head is thrown away; the network keeps what it learnt
and gets a fresh classifier (common.unsup.transfer_weights), as after rotation pretraining.

Augmentations (kornia, on the GPU when there is one): random resized crop (scale 0.2-1), horizontal flip
for colour images only (a flipped digit is another glyph), brightness/contrast jitter, and for colour images
saturation/hue jitter and random greyscale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.gen_descr import capture_activations, pool_spatial
from common.images import Images
from common.schedule import Schedule
from common.seeding import torch_global_seed
from common.train import ToInput, mixed_precision, model_input, place

TEMPERATURE = 0.5
PROJECTION = 64  # output width of the projection head
BATCH = 256  # images per contrastive batch (512 views): SimCLR needs many negatives
LEARNING_RATE = 1e-3  # Adam (the paper's LARS is for batches of thousands)
MIN_STEPS = 300  # optimiser steps at least, whatever the pool (a 1,400-image pool makes 6 batches an epoch)


def simclr_schedule(rotation: Schedule, pool_size: int) -> Schedule:
    """The dataset's rotation-pretraining schedule, its epochs raised until they make MIN_STEPS batches."""
    per_epoch = max(1, -(-pool_size // BATCH))
    return rotation.with_epochs(max(rotation.epochs, -(-MIN_STEPS // per_epoch)))


def augmentation(channels: int, side: int) -> nn.Module:
    import kornia.augmentation as K

    steps = [K.RandomResizedCrop((side, side), scale=(0.2, 1.0))]
    if channels == 3:
        steps += [K.RandomHorizontalFlip(), K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    else:
        steps += [K.ColorJitter(0.4, 0.4, p=0.8)]
    return K.AugmentationSequential(*steps)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """NT-Xent of two views' projections [B, P]: view i's positive is the other view of image i."""
    z = F.normalize(torch.cat([first, second]).float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    count = len(first)
    partner = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(z.device)
    return F.cross_entropy(similarity, partner)


class Projector(nn.Module):
    """The network's penultimate features (spatially pooled) through a two-layer projection head."""

    def __init__(self, model: nn.Module, feature_layer: str, width: int) -> None:
        super().__init__()
        self.model, self.feature_layer = model, feature_layer
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, PROJECTION))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture_activations(self.model, (self.feature_layer,)) as outputs:
            self.model(x)
        return self.head(pool_spatial(outputs[self.feature_layer]))


def feature_width(model: nn.Module, feature_layer: str, sample: torch.Tensor) -> int:
    with torch.no_grad(), capture_activations(model, (feature_layer,)) as outputs:
        model(sample)
    return pool_spatial(outputs[feature_layer]).shape[1]


def pretrain_simclr(model: nn.Module, pool_images: Images, schedule: Schedule, to_input: ToInput,
                    feature_layer: str, seed: int, device: torch.device, progress: bool = False,
                    ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train `model` contrastively on the pool for `schedule.epochs` epochs (batches of BATCH images, Adam at
    LEARNING_RATE: the schedule gives the epochs only); returns its weights and the mean loss of every epoch."""
    from tqdm import tqdm

    place(model, device).train()
    with torch_global_seed(seed):
        first = model_input(to_input, pool_images[torch.arange(min(2, len(pool_images)))], device)
        projector = Projector(model, feature_layer, feature_width(model, feature_layer, first)).to(device)
        augment = augmentation(first.shape[1], first.shape[-1]).to(device)
        optimiser = torch.optim.Adam(projector.parameters(), lr=LEARNING_RATE)
        order_generator = torch.Generator().manual_seed(seed)
        losses = []
        for _epoch in tqdm(range(schedule.epochs), desc="contrastive pretraining", disable=not progress, leave=False):
            order = torch.randperm(len(pool_images), generator=order_generator)
            total, batches = 0.0, 0
            for start in range(0, len(order) - 1, BATCH):
                part = order[start : start + BATCH]
                if len(part) < 2:
                    continue
                x = model_input(to_input, pool_images[part], device)
                with mixed_precision(device):
                    loss = nt_xent(projector(augment(x)), projector(augment(x)))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / max(1, batches))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, losses

