"""ShuffleNetV1 of the KD benchmark (RepDistiller ``models/ShuffleNetv1.py``, ``ShuffleV1``).

Groups g = 3, stage widths 240-480-960 with 4-8-4 units. Stem conv1x1 (24) → BN → ReLU at full
resolution (no stride, no max-pool), then three stages whose first unit strides 2 and concatenates
an avg-pooled shortcut; global average pooling and one linear layer. A unit is grouped 1x1 (g, or 1
when its input is the 24-channel stem) → BN → ReLU → channel shuffle → depthwise 3x3 → BN → grouped
1x1 → BN, then ReLU(add or concat with the shortcut). PyTorch's default initialisation, as there.

Stages: ``layer1``, ``layer2``, ``layer3`` = RepDistiller's f1, f2, f3 (f0 is the stem, f4 the
classifier input). FitNets' hint layer (f2) is our stage index 1, ``layer2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.models.cifar._common import ChannelShuffle
from kdexp.models.registry import register_model


class ShuffleUnit(nn.Module):
    """ShuffleNetV1 bottleneck unit; ``stride`` 2 concatenates an avg-pooled input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        g = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ChannelShuffle(g)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """CIFAR ShuffleNetV1 (stride-1 1x1 stem, three stages)."""

    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            # The strided first unit concatenates its input, so its branch makes the difference.
            branch_out = out_planes - self.in_planes if i == 0 else out_planes
            layers.append(ShuffleUnit(self.in_planes, branch_out, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.avgpool(out).flatten(1))


@register_model("shufflenetv1", stages=["layer1", "layer2", "layer3"], classifier="linear")
def shufflenetv1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    """RepDistiller's ``ShuffleV1``: g = 3, widths 240-480-960, units 4-8-4."""
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)
