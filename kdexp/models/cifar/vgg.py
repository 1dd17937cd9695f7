"""VGGs with BatchNorm of the KD benchmark (RepDistiller ``models/vgg.py``, ``vgg*_bn``).

Five blocks of (conv3x3 with bias → BN → ReLU) x m, 2x2 max-pools after blocks 0, 1 and 2 (a fourth
pool after block 3 only for 64x64 inputs, as in RepDistiller), global average pooling and a single
linear layer 512 → classes (the VGG fully-connected head is removed). Per-block widths:

    vgg8  (S): [64] [128] [256] [512] [512]
    vgg11 (A): [64] [128] [256, 256] [512, 512] [512, 512]
    vgg13 (B): [64, 64] [128, 128] [256, 256] [512, 512] [512, 512]
    vgg16 (D): [64, 64] [128, 128] [256]*3 [512]*3 [512]*3
    vgg19 (E): [64, 64] [128, 128] [256]*4 [512]*4 [512]*4

RepDistiller drops each block's last ReLU and applies it in ``forward``; here it stays inside the
block (a parameter-free module appended last), so hooking a block yields RepDistiller's post-ReLU
feature and the state-dict keys are unchanged.

Stages: ``block1`` … ``block4`` = RepDistiller's f1 … f4 (f0 = block0 is the stem and not a stage;
f5 is the classifier input). FitNets' hint layer (f2) is our stage index 1, ``block2``.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdexp.models.cifar._common import init_kaiming_
from kdexp.models.registry import register_model

_CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [
        [64, 64],
        [128, 128],
        [256, 256, 256, 256],
        [512, 512, 512, 512],
        [512, 512, 512, 512],
    ],
}


def _make_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w)]
        layers.append(nn.ReLU(inplace=True))
        in_channels = w
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Five-block VGG-BN with a single linear classifier."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.block0 = _make_block(cfg[0], in_channels)
        self.block1 = _make_block(cfg[1], cfg[0][-1])
        self.block2 = _make_block(cfg[2], cfg[1][-1])
        self.block3 = _make_block(cfg[3], cfg[2][-1])
        self.block4 = _make_block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        init_kaiming_(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if h == 64:  # RepDistiller pools a fourth time only for 64x64 inputs
            x = self.pool3(x)
        x = self.block4(x)
        return self.classifier(self.pool4(x).flatten(1))


_STAGES = ["block1", "block2", "block3", "block4"]


def _register(name: str, cfg: list[list[int]]) -> None:
    @register_model(name, stages=_STAGES, classifier="classifier")
    def build(num_classes: int = 100, in_channels: int = 3) -> VGG:
        return VGG(cfg, num_classes, in_channels)


for _name, _cfg in _CFGS.items():
    _register(_name, _cfg)
