"""Wide ResNets of the KD benchmark (RepDistiller ``models/wrn.py``): wrn_16_1, 16_2, 40_1, 40_2.

WRN-d-k: conv3x3 (16) → three groups of n = (d - 4) / 6 pre-activation blocks with widths 16k, 32k,
64k (the first block of groups 2 and 3 strides 2) → BN → ReLU → global average pooling → linear.
A pre-activation block is conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, where the shortcut is
the identity, or a 1x1 conv on relu(bn1(x)) when the width or stride changes. No dropout (the
benchmark uses dropRate 0). Module names follow RepDistiller, so its checkpoints load unchanged.

Stages: ``block1``, ``block2``, ``block3`` = RepDistiller's f1, f2, f3 (pre-activation outputs, as
there; f0 is the stem conv, f4 the classifier input). FitNets' hint layer (f2) is our stage index 1,
``block2``.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdexp.models.cifar._common import init_kaiming_
from kdexp.models.registry import register_model


class WideBasicBlock(nn.Module):
    """Pre-activation basic block (BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        # RepDistiller's name, kept so that its checkpoints load.
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        if self.convShortcut is None:
            return x + out
        # When the shape changes, the shortcut also sees the pre-activated input.
        return self.convShortcut(pre) + out


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` wide blocks; only the first changes width and stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        blocks = [WideBasicBlock(in_planes, out_planes, stride)]
        blocks += [WideBasicBlock(out_planes, out_planes, 1) for _ in range(1, nb_layers)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for 32x32 inputs; depth = 6n + 4."""

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int = 100, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], stride=1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], stride=2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], stride=2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        init_kaiming_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(self.avgpool(out).flatten(1))


_STAGES = ["block1", "block2", "block3"]


def _register(name: str, depth: int, widen_factor: int) -> None:
    @register_model(name, stages=_STAGES, classifier="fc")
    def build(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes, in_channels)


for _name, _depth, _k in [
    ("wrn_16_1", 16, 1),
    ("wrn_16_2", 16, 2),
    ("wrn_40_1", 40, 1),
    ("wrn_40_2", 40, 2),
]:
    _register(_name, _depth, _k)
