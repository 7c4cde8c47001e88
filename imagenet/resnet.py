"""ResNet-18 from torchvision, with an optional dropout before the classifier (MC-dropout).

The dropout module holds no weights, so checkpoints load into either variant.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class ResNet18(ResNet):
    def __init__(self, num_classes: int = 1000, mc_dropout: bool = False) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.dropout = nn.Dropout(0.5 if mc_dropout else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, num_classes]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# Descriptor layer sets, named by length like the paper's: layer3 (256) and layer3 + layer4 (768).
RESNET18_DESCRIPTOR_LAYERS = {"l256": ("layer3",), "l768": ("layer3", "layer4")}
