"""CIFAR ResNet50 of the KD benchmark (RepDistiller ``models/resnetv2.py``, ``ResNet50``).

The ImageNet ResNet50 (bottlenecks [3, 4, 6, 3], widths 64-128-256-512, expansion 4) with a CIFAR
stem: one 3x3 stride-1 conv → BN → ReLU and no max-pool. It is the teacher of the benchmark's
ResNet50 → MobileNetV2 pair. Module names follow RepDistiller (``shortcut``, ``linear``).

Stages: ``layer1`` … ``layer4`` = RepDistiller's f1 … f4 (f0, the stem, is not a stage; f5 is the
classifier input). FitNets' hint layer (f2) is our stage index 1, ``layer2``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.models.cifar._common import init_kaiming_
from kdexp.models.registry import register_model


class Bottleneck(nn.Module):
    """1x1 → 3x3 (carries the stride) → 1x1 (x4 channels), + identity or 1x1-conv + BN shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNetV2(nn.Module):
    """Four-stage bottleneck ResNet with a CIFAR stem."""

    def __init__(
        self, num_blocks: tuple[int, int, int, int], num_classes: int = 100, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)
        init_kaiming_(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.avgpool(out).flatten(1))


@register_model("resnet50", stages=["layer1", "layer2", "layer3", "layer4"], classifier="linear")
def resnet50(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """RepDistiller's CIFAR ``ResNet50``."""
    return ResNetV2((3, 4, 6, 3), num_classes, in_channels)
