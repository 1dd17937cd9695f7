"""CIFAR ResNets of the KD benchmark (RepDistiller ``models/resnet.py``): resnet8 … resnet110, x4.

Stem conv3x3 → BN → ReLU, then three stages of BasicBlocks (depth = 6n + 2, n blocks per stage, the
first block of stages 2 and 3 strides 2 with a 1x1-conv + BN shortcut), global average pooling and
one linear layer. Widths (stem, stage1, stage2, stage3) are (16, 16, 32, 64), or (32, 64, 128, 256)
for the "x4" variants. Module names follow RepDistiller, so its checkpoints load with strict=True.

Stages (shallow → deep): ``layer1``, ``layer2``, ``layer3`` = RepDistiller's feature list f1, f2, f3
(f0, the stem output, is not a stage; f4 is the classifier input). FitNets' hint layer in the
benchmark (``--hint_layer 2`` → f2) is therefore our stage index 1, ``layer2``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.models.cifar._common import init_kaiming_
from kdexp.models.registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), shortcut = identity or 1x1 conv + BN."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class CifarResNet(nn.Module):
    """Three-stage CIFAR ResNet with BasicBlocks; ``depth`` = 6n + 2."""

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[1], n, stride=1)
        self.layer2 = self._make_layer(widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        init_kaiming_(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_planes = planes * BasicBlock.expansion
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


_STAGES = ["layer1", "layer2", "layer3"]
_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    @register_model(name, stages=_STAGES, classifier="fc")
    def build(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_channels)


for _name, (_depth, _widths) in _CONFIGS.items():
    _register(_name, _depth, _widths)
