"""Projection network student (Ravi 2017, "ProjectionNet: Learning Efficient On-Device Deep
Networks Using Neural Projections").

T projection functions, each a fixed random locality-sensitive hash of the flattened input
x ∈ R^D to d bits: bit j of function t is [r_tj · x > 0] (the sign of a dot product with a random
vector, random-hyperplane LSH). The vectors r_tj have entries ±1 (a sign random projection), so
the T·d·D of them are stored as bits, in a persistent buffer: a reloaded student hashes
identically. The T·d bits feed a small dense network (``hidden`` ReLU layers, then K logits).

Memory: the dense network's float32 weights plus T·d·D projection bits (``memory_report``).
Defaults T=60, d=10 (600 bits) and one 128-unit hidden layer: a small ProjectionNet for 28x28 inputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kdexp.models.registry import register_model


class ProjectionNet(nn.Module):
    """Fixed LSH bits of the input → dense ReLU layers → logits."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        projections: int = 60,
        bits: int = 10,
        hidden: tuple[int, ...] = (128,),
        projection_seed: int = 0,
    ) -> None:
        super().__init__()
        for key, value in (("projections", projections), ("bits", bits), ("projection_seed", projection_seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "projection_seed" else 1):
                raise ValueError(f"student.{key} must be a positive integer, got {value!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"student.hidden must be a list of positive layer widths, got {list(hidden)!r}")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.projections, self.bits = projections, bits
        input_dim = math.prod(self.input_shape)
        # Drawn from its own generator: the same seed gives the same hash functions in every run.
        generator = torch.Generator().manual_seed(projection_seed)
        signs = torch.rand(projections * bits, input_dim, generator=generator) < 0.5
        self.register_buffer("projection_signs", signs)  # True = +1, False = −1
        layers: list[nn.Module] = []
        width = projections * bits
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def hash(self, x: Tensor) -> Tensor:
        """[B, T·d] projection bits (0./1.) of a batch of images of the training shape."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"the projection student was built (and its hash functions drawn) for images of shape "
                f"{self.input_shape}, got {tuple(x.shape[1:])}; use data of the training size"
            )
        planes = self.projection_signs.to(x.dtype) * 2 - 1
        return (x.flatten(1) @ planes.T > 0).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(self.hash(x)))

    def memory_report(self) -> dict[str, Any]:
        """Storage as deployed: float32 dense weights plus one bit per projection entry."""
        dense = sum(p.numel() for p in self.parameters())
        projection_bits = self.projection_signs.numel()
        return {
            "projection_bits": projection_bits,
            "dense_params": dense,
            "deployed_size_mb": (32 * dense + projection_bits) / 8 / 1e6,
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        signs = state_dict.get(prefix + "projection_signs")
        if signs is not None and signs.shape != self.projection_signs.shape:
            raise ValueError(
                f"this projection student's hash functions are {tuple(signs.shape)} (T·d x input size); "
                f"the model built here expects {tuple(self.projection_signs.shape)}: the data's image "
                f"size {self.input_shape} or student.projections/bits differ from the saved student's"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register_model("projection", stages=["body"], classifier="fc")
def projection(
    num_classes: int = 10,
    in_channels: int = 1,
    input_shape: tuple[int, int, int] | None = None,
    projections: int = 60,
    bits: int = 10,
    hidden: list[int] | tuple[int, ...] = (128,),
    projection_seed: int = 0,
    trained_input_shape: list[int] | None = None,
) -> ProjectionNet:
    """A projection network; ``input_shape`` defaults to (in_channels, 28, 28).

    ``trained_input_shape`` (the shape a saved student was trained on) must equal the data's.
    """
    shape = tuple(input_shape) if input_shape is not None else (in_channels, 28, 28)
    if trained_input_shape is not None and tuple(trained_input_shape) != shape:
        raise ValueError(
            f"student.trained_input_shape={list(trained_input_shape)} but the data's images are "
            f"{list(shape)}: a projection student's hash functions only apply to images of the size it "
            "was trained on; use that data (or resize it), or train a new projection student"
        )
    return ProjectionNet(shape, num_classes, projections, bits, tuple(hidden), projection_seed)


class MLP(nn.Module):
    """Flattened pixels → dense ReLU layers → logits: the projection network's dense baseline
    (``student=mlp student.hidden=[98]`` has about the parameters of the default projection net)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


@register_model("mlp", stages=["body"], classifier="fc")
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    input_shape: tuple[int, int, int] | None = None,
    hidden: list[int] | tuple[int, ...] = (98,),
) -> MLP:
    """A dense network on the flattened image; ``input_shape`` defaults to (in_channels, 28, 28)."""
    shape = tuple(input_shape) if input_shape is not None else (in_channels, 28, 28)
    return MLP(shape, num_classes, tuple(hidden))
