"""Name → model constructor, with the feature stages each model declares.

A model registers itself with the module paths of its feature stages (shallow → deep) and of its
final classifier; feature-based methods hook those paths, so no model needs editing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from kdexp.registry import Registry, UnknownName


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and where its features are."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=..., in_channels=...) -> nn.Module
    stages: tuple[str, ...]  # module paths of the feature stages, shallow → deep
    classifier: str  # module path of the final linear layer; its input is the embedding


MODELS: Registry[ModelSpec] = Registry("model", sort=True)
UnknownModelError = UnknownName  # what get_spec raises; ``name`` and ``choices`` let callers name their key


def register_model(name: str, *, stages: list[str] | tuple[str, ...], classifier: str):
    """Decorator: register ``fn(num_classes, in_channels, **kw) -> nn.Module`` under ``name``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name)(ModelSpec(name, fn, tuple(stages), classifier))
        return fn

    return decorator


def available_models() -> list[str]:
    return MODELS.names()


def get_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model for ``num_classes`` classes and ``in_channels`` input channels."""
    return get_spec(name).build(num_classes=num_classes, in_channels=in_channels, **kwargs)
