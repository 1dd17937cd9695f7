"""Small CNNs for 28x28 grayscale images (Fashion-MNIST), fast enough to distil on a CPU.

Each is ``len(widths)`` blocks of (conv3x3-BN-ReLU) x ``convs_per_block``, a 2x2 max-pool between
blocks, global average pooling and one linear classifier. The stages are the blocks.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdexp.models.registry import register_model


class SmallCNN(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...],
        convs_per_block: int = 1,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        blocks, channels = [], in_channels
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for _ in range(convs_per_block):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(x)).flatten(1))


def _register(name: str, widths: tuple[int, ...], convs_per_block: int) -> None:
    stages = [f"blocks.{i}" for i in range(len(widths))]

    @register_model(name, stages=stages, classifier="fc")
    def build(num_classes: int = 10, in_channels: int = 1) -> SmallCNN:
        return SmallCNN(widths, convs_per_block, num_classes, in_channels)


# name, widths, convs per block
_register("cnn_tiny", (8, 16, 32), 1)
_register("cnn_small", (16, 32, 64), 1)
_register("cnn_medium", (32, 64, 128), 1)
_register("cnn_large", (32, 64, 128), 2)
