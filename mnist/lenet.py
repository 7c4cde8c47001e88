"""LeNet for 28x28 single-channel images, as in the FK paper (descriptor L = 10 + 20 + 50 = 80).

Each stage is a named submodule so descriptor layers are picked by name: conv1, conv2, fc1.
With mc_dropout the network has dropout 0.25 after each conv block and 0.5 after fc1
(docs/method.md#baselines); without it the dropout layers are identities, so both share one set
of weights.
"""
from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10, mc_dropout: bool = False, image_size: int = 28, channels: int = 1):
        super().__init__()
        conv_dropout, fc_dropout = (0.25, 0.5) if mc_dropout else (0.0, 0.0)
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU())
        self.drop1 = nn.Dropout(conv_dropout)
        self.conv2 = nn.Sequential(nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU())
        self.drop2 = nn.Dropout(conv_dropout)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(20 * side * side, 50), nn.ReLU())
        self.drop3 = nn.Dropout(fc_dropout)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, 28, 28] -> [B, num_classes]
        x = self.drop1(self.conv1(x))
        x = self.drop2(self.conv2(x))
        return self.fc2(self.drop3(self.fc1(x)))


# Descriptor layer sets of the paper: L=80 (all three stages) and L=20 (conv2 alone).
LENET_DESCRIPTOR_LAYERS = {"l80": ("conv1", "conv2", "fc1"), "l20": ("conv2",)}
