"""Model registry: kdexp's own models, torchvision and timm classifiers, each with feature stages.

Every module of this package is imported, so a new model is one file with a ``@register_model``
function. ``build_model(cfg, num_classes, in_channels)`` reads a model config (``source``, ``name`` and the
source's options) and returns a ``BuiltModel``: the module plus where its features are.
"""

from __future__ import annotations

import inspect
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
from kdexp.models.imported import TARGET, build_python_model
from kdexp.models.registry import ModelSpec, available_models, create_model, get_spec, register_model
from kdexp.registry import choose_one_of, import_submodules

import_submodules(__name__)  # every model module registers itself: a new model is one file

SOURCES = ("kdexp", "torchvision", "timm", "python")  # python: a user's _target_ (kdexp.models.imported)
# Model-config keys that are not a kdexp constructor's options (where the weights come from etc.).
NOT_OPTIONS = {"source", "name", "weights", "pretrained", "checkpoint", "train", "seed", "quantize"}


@dataclass
class BuiltModel:
    module: nn.Module
    name: str
    stages: tuple[str, ...]  # module paths of the feature stages, shallow → deep
    classifier: str  # module path of the final linear layer
    cfg: dict[str, Any] = field(default_factory=dict)  # the config that builds it afresh


def model_source(cfg: dict[str, Any]) -> str:
    """Where a model config's model comes from: ``python`` for a ``_target_`` (a user's own
    callable), else its ``source`` (default ``kdexp``, the registry)."""
    return "python" if TARGET in cfg else str(cfg.get("source", "kdexp"))


def build_model(
    cfg: dict[str, Any], num_classes: int, in_channels: int, input_shape: tuple[int, ...] | None = None
) -> BuiltModel:
    """Build the model a teacher/student config describes (keys: source, name, weights...).

    For kdexp models, the config's other keys are the constructor's options (e.g. a soft tree's
    ``depth``), and ``input_shape`` (C, H, W) reaches constructors that take it. ``quantize``
    (weight_bits, activation_bits) makes any model a quantisation-aware one (kdexp.quantize).
    """
    source = choose_one_of("source", model_source(cfg), SOURCES)
    if source == "python" and TARGET not in cfg:
        raise ValueError("source: python needs _target_: <import path of a callable returning an nn.Module>")
    if source == "python" and cfg.get("source", "python") != "python":
        raise ValueError(f"source={cfg['source']!r} and _target_={cfg[TARGET]!r}: give one (a _target_ is source python)")
    name, cfg = cfg.get("name"), dict(cfg)
    if cfg.get("quantize"):
        from kdexp.quantize import check_quantize_cfg, quantize_model

        check_quantize_cfg(cfg["quantize"])
        plain_cfg = {k: v for k, v in cfg.items() if k != "quantize"}
        built = build_model(plain_cfg, num_classes, in_channels, input_shape)
        shape = tuple(input_shape) if input_shape else (in_channels, 28, 28)
        built.module = quantize_model(built.module, cfg["quantize"], shape)
        # The traced graph no longer calls the stage modules (their hooks would not fire), so
        # feature methods find no stages; logits methods (kd, the apprentice schemes) work.
        built.stages, built.cfg = (), cfg
        bits = built.module.weight_bits, built.module.activation_bits
        built.name = f"{name}-w{bits[0]}a{bits[1]}"  # e.g. cnn_tiny-w4a8: its own row in reports
        return built
    if source == "python":
        module, stages, classifier = build_python_model(cfg, num_classes, NOT_OPTIONS)
        return BuiltModel(module, str(cfg["name"]), stages, classifier, cfg)
    if source == "kdexp":
        spec = get_spec(name)
        options = {k: v for k, v in cfg.items() if k not in NOT_OPTIONS}
        accepted = set(inspect.signature(spec.build).parameters) - {"num_classes", "in_channels"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(
                f"model {name!r} has no option(s) {unknown}; its options are: {sorted(accepted - {'input_shape'}) or 'none'}"
            )
        if input_shape is not None and "input_shape" in accepted:
            options["input_shape"] = tuple(input_shape)
        model = spec.build(num_classes=num_classes, in_channels=in_channels, **options)
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
    "model_source",
    "create_model",
    "get_spec",
    "register_model",
]


def architecture_cfg(teacher_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config without pretrained weights: the architecture that a checkpoint fills."""
    return {**teacher_cfg, "weights": None, "pretrained": False}
