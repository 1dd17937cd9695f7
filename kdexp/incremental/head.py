"""A classifier head that grows as classes arrive, keeping the old classes' weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdexp.models import BuiltModel


def grown(model: BuiltModel, num_classes: int) -> BuiltModel:
    """A trainable copy of ``model`` whose final linear layer (``model.classifier``) has
    ``num_classes`` outputs: rows of the old outputs are copied, new rows keep nn.Linear's
    default initialisation. The original (the next step's teacher) is left untouched."""
    module = copy.deepcopy(model.module).train().requires_grad_(True)
    old = module.get_submodule(model.classifier)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{model.name}: the classifier {model.classifier!r} is a {type(old).__name__}, not nn.Linear; it cannot grow")
    if num_classes < old.out_features:
        raise ValueError(f"a head cannot shrink ({old.out_features} → {num_classes} classes)")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias[: old.out_features] = old.bias
    parent_path, _, name = model.classifier.rpartition(".")
    setattr(module.get_submodule(parent_path) if parent_path else module, name, new)
    return BuiltModel(module, model.name, model.stages, model.classifier, model.cfg)
