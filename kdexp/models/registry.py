"""Name → model constructor, with the feature stages each model declares.

A model registers itself with the module paths of its feature stages (shallow → deep) and of its
final classifier; feature-based methods hook those paths, so no model needs editing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and where its features are."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=..., in_channels=...) -> nn.Module
    stages: tuple[str, ...]  # module paths of the feature stages, shallow → deep
    classifier: str  # module path of the final linear layer; its input is the embedding


_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(ValueError):
    """A model name that is not registered; ``name`` and ``choices`` let callers name their key."""

    def __init__(self, name: str, choices: list[str]) -> None:
        self.name, self.choices = name, ", ".join(choices)
        super().__init__(f"model {name!r} is not registered; registered models are: {self.choices}")


def register_model(name: str, *, stages: list[str] | tuple[str, ...], classifier: str):
    """Decorator: register ``fn(num_classes, in_channels, **kw) -> nn.Module`` under ``name``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, tuple(stages), classifier)
        return fn

    return decorator


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, available_models()) from None


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model for ``num_classes`` classes and ``in_channels`` input channels."""
    return get_spec(name).build(num_classes=num_classes, in_channels=in_channels, **kwargs)
