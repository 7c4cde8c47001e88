"""ResNet-10 for 32x32 RGB images (SVHN, CIFAR): a CIFAR-style stem and one BasicBlock per stage.

Stages are named submodules (layer1..layer4, widths 64/128/256/512) so descriptor layers are
picked by name; `avgpool` is its own module so the penultimate features [N, 512] can be hooked.
With mc_dropout there is dropout 0.5 before the classifier `fc`; without it the dropout is an
identity, so both variants share one set of weights (as LeNet's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RESNET10_WIDTHS = (64, 128, 256, 512)
RESNET10_STRIDES = (1, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual shortcut (1x1 conv-BN where the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out-of-place ReLUs: a hooked block output must stay intact for the gradient descriptors.
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet10(nn.Module):
    def __init__(self, num_classes: int = 10, mc_dropout: bool = False, channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, RESNET10_WIDTHS[0], 3, padding=1, bias=False), nn.BatchNorm2d(RESNET10_WIDTHS[0]),
            nn.ReLU(),
        )  # no max-pool: 32x32 inputs keep their resolution into layer1
        in_channels = RESNET10_WIDTHS[0]
        for index, (width, stride) in enumerate(zip(RESNET10_WIDTHS, RESNET10_STRIDES), start=1):
            setattr(self, f"layer{index}", nn.Sequential(BasicBlock(in_channels, width, stride)))
            in_channels = width
        self.avgpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(0.5 if mc_dropout else 0.0)
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, 32, 32] -> [B, num_classes]
        x = self.stem(x)  # [B, 64, 32, 32]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, 4, 4]
        return self.fc(self.dropout(self.avgpool(x)))


# Descriptor layer sets: L=256 (layer3 alone) and L=768 (layer3 + layer4, the default).
RESNET10_DESCRIPTOR_LAYERS = {"l768": ("layer3", "layer4"), "l256": ("layer3",)}

# What every 32x32 dataset spec shares about this network (see svhn/__init__.py, cifar/__init__.py).
RESNET10_SPEC_FIELDS = {
    "model": lambda num_classes, mc_dropout: ResNet10(num_classes, mc_dropout),
    "descriptor_layers": RESNET10_DESCRIPTOR_LAYERS,
    "default_layer_set": "l768",
    "classifier": "fc",
    "penultimate": "avgpool",
    "top_k": 32,
    "inference_batch_size": 512,
}
