"""ShuffleNetV2 of the KD benchmark (RepDistiller ``models/ShuffleNetv2.py``, ``ShuffleV2``).

Net size 1x: stage widths 116-232-464 with 3-7-3 basic units, final conv1x1 to 1024. Stem conv1x1
(24) → BN → ReLU at full resolution (no stride, no max-pool); each stage is one down-sampling unit
followed by the basic units; then conv1x1 → BN → ReLU, global average pooling and one linear layer.
PyTorch's default initialisation, as there.

Stages: ``layer1``, ``layer2``, ``layer3`` = RepDistiller's f1, f2, f3 (f0 is the stem, f4 the
classifier input). FitNets' hint layer (f2) is our stage index 1, ``layer2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.models.cifar._common import ChannelShuffle
from kdexp.models.registry import register_model

# net_size → (stage widths and final width, basic units per stage), as in RepDistiller.
_CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    0.2: ((40, 80, 160, 512), (3, 3, 3)),
    0.3: ((40, 80, 160, 512), (3, 7, 3)),
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class BasicUnit(nn.Module):
    """Split channels; transform one half (1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU); concat; shuffle."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split_ratio = split_ratio
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class DownUnit(nn.Module):
    """Stride-2 unit: branches (dw3x3-BN, 1x1-BN-ReLU) and (1x1-BN-ReLU, dw3x3-BN, 1x1-BN-ReLU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """CIFAR ShuffleNetV2 (stride-1 1x1 stem, three stages, final 1x1 conv)."""

    def __init__(self, net_size: float = 1, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if net_size not in _CONFIGS:
            raise ValueError(
                f"ShuffleNetV2 net_size must be one of {sorted(_CONFIGS)}, got {net_size}"
            )
        out_channels, num_blocks = _CONFIGS[net_size]
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [DownUnit(self.in_channels, out_channels)]
        layers += [BasicUnit(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(self.avgpool(out).flatten(1))


@register_model("shufflenetv2", stages=["layer1", "layer2", "layer3"], classifier="linear")
def shufflenetv2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """RepDistiller's ``ShuffleV2`` (net size 1x: widths 116-232-464, final 1024)."""
    return ShuffleNetV2(1, num_classes, in_channels)
