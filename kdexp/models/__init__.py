"""Model registry: kdexp's own models, torchvision and timm classifiers, each with feature stages.

Every module of this package is imported, so a new model is one file with a ``@register_model``
function. ``build_model(cfg, num_classes, in_channels)`` reads a model config (``source``, ``name`` and the
source's options) and returns a ``BuiltModel``: the module plus where its features are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kdexp.models.external import (
    create_timm_model,
    create_torchvision_model,
    last_linear_path,
    timm_stages,
    torchvision_stages,
)
from kdexp.models.registry import ModelSpec, available_models, create_model, get_spec, register_model
from kdexp.registry import choose_one_of, import_submodules

import_submodules(__name__)  # every model module registers itself: a new model is one file

SOURCES = ("kdexp", "torchvision", "timm")


@dataclass
class BuiltModel:
    module: nn.Module
    name: str
    stages: tuple[str, ...]  # module paths of the feature stages, shallow → deep
    classifier: str  # module path of the final linear layer
    cfg: dict[str, Any] = field(default_factory=dict)  # the config that builds it afresh


def build_model(cfg: dict[str, Any], num_classes: int, in_channels: int) -> BuiltModel:
    """Build the model a teacher/student config describes (keys: source, name, weights...)."""
    source, name = choose_one_of("source", cfg.get("source", "kdexp"), SOURCES), cfg["name"]
    cfg = dict(cfg)
    if source == "kdexp":
        spec = get_spec(name)
        model = spec.build(num_classes=num_classes, in_channels=in_channels)
        return BuiltModel(model, name, spec.stages, spec.classifier, cfg)
    if source == "torchvision":
        model = create_torchvision_model(name, num_classes, in_channels, cfg.get("weights"))
        return BuiltModel(model, name, torchvision_stages(name), last_linear_path(model), cfg)
    model = create_timm_model(name, num_classes, in_channels, bool(cfg.get("pretrained")))
    return BuiltModel(model, name, timm_stages(model), last_linear_path(model), cfg)


__all__ = [
    "SOURCES",
    "BuiltModel",
    "ModelSpec",
    "available_models",
    "build_model",
    "create_model",
    "get_spec",
    "register_model",
]
