"""MobileNetV2 of the KD benchmark (RepDistiller ``models/mobilenetv2.py``, ``mobile_half``).

Expansion T = 6, width multiplier 0.5 (the classifier input stays 1280 wide). Stem conv3x3 stride 2
(16 channels) → seven groups of inverted residual blocks (t, c, n, s) = (1, 16, 1, 1),
(6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1) with c
halved → conv1x1 to 1280 → global average pooling → linear. Module names follow RepDistiller.

Stages: ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6`` = RepDistiller's f1 … f4 (f0 is the
stem ``conv1``, f5 the classifier input). FitNets' hint layer (f2) is our stage index 1,
``blocks.2``.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdexp.models.cifar._common import init_kaiming_
from kdexp.models.registry import register_model


def conv_bn_relu(inp: int, oup: int, kernel_size: int, stride: int) -> nn.Sequential:
    """Conv (no bias, 'same' padding) → BN → ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (x t) → 3x3 depthwise (stride) → 1x1 linear projection; residual if same shape."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 with expansion ``expansion`` and width multiplier ``width_mult``."""

    def __init__(
        self,
        expansion: int = 6,
        width_mult: float = 0.5,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        t = expansion
        setting = [  # t, c, n, s
            (1, 16, 1, 1),
            (t, 24, 2, 1),
            (t, 32, 3, 2),
            (t, 64, 4, 2),
            (t, 96, 3, 1),
            (t, 160, 3, 2),
            (t, 320, 1, 1),
        ]
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t_i, c, n, s in setting:
            out = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(channels, out, stride, t_i))
                channels = out
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, self.last_channel, 1, stride=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # A Sequential holding one Linear, as in RepDistiller (checkpoint key "classifier.0.*").
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        init_kaiming_(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        out = self.conv2(out)
        return self.classifier(self.avgpool(out).flatten(1))


@register_model(
    "mobilenetv2",
    stages=["blocks.1", "blocks.2", "blocks.4", "blocks.6"],
    classifier="classifier.0",
)
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> MobileNetV2:
    """RepDistiller's ``mobile_half`` (T = 6, width 0.5): "MobileNetV2" in the benchmark tables."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
