"""Small pieces shared by the CIFAR benchmark architectures."""

from __future__ import annotations

from torch import Tensor, nn


def init_kaiming_(model: nn.Module, linear_std: float | None = None) -> None:
    """RepDistiller's initialisation, in place.

    Conv weights ~ N(0, 2 / (k_h * k_w * out_channels)) (Kaiming normal, fan-out, ReLU gain), conv
    biases 0; BatchNorm weight 1, bias 0. With ``linear_std`` set, linear weights
    ~ N(0, linear_std²) and biases 0; otherwise linear layers keep PyTorch's default.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


class ChannelShuffle(nn.Module):
    """Channel shuffle: [N, g·c, H, W] → view [N, g, c, H, W] → swap g and c → [N, c·g, H, W]."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
