"""One LightningModule per method; ``build_method`` picks one from ``method.name``."""

from __future__ import annotations

import inspect
from typing import Any

from kdexp.methods.at import AttentionTransferModule
from kdexp.methods.base import DistillationModule
from kdexp.methods.born_again import BornAgainModule
from kdexp.methods.dml import DMLModule
from kdexp.methods.hints import HintsModule
from kdexp.methods.kd import KDModule
from kdexp.methods.rkd import RelationalKDModule
from kdexp.methods.sp import SimilarityPreservingModule
from kdexp.methods.vanilla import VanillaModule
from kdexp.models import BuiltModel

METHODS: dict[str, type[DistillationModule]] = {
    "vanilla": VanillaModule,
    "kd": KDModule,
    "hints": HintsModule,
    "at": AttentionTransferModule,
    "sp": SimilarityPreservingModule,
    "rkd": RelationalKDModule,
    "born_again": BornAgainModule,
    "dml": DMLModule,
}


def method_class(name: str) -> type[DistillationModule]:
    if name not in METHODS:
        raise ValueError(f"method.name={name!r} is unknown; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def allowed_hparams(cls: type[DistillationModule]) -> list[str]:
    """Keyword arguments a method accepts from its config (its own and its bases')."""
    internal = {"self", "student", "teacher", "num_classes", "input_shape", "optimizer", "scheduler"}
    names: list[str] = []
    for klass in cls.__mro__:
        if not issubclass(klass, DistillationModule):
            continue
        for param in inspect.signature(klass.__init__).parameters.values():
            if param.kind is param.VAR_KEYWORD or param.name in internal or param.name in names:
                continue
            names.append(param.name)
    return names


def check_method_cfg(cfg: dict[str, Any]) -> tuple[type[DistillationModule], dict[str, Any]]:
    """The method's class and its options, or a clear error naming the unknown keys."""
    hparams = dict(cfg)
    cls = method_class(hparams.pop("name"))
    unknown = sorted(set(hparams) - set(allowed_hparams(cls)))
    if unknown:
        raise ValueError(
            f"method {cfg['name']!r} has no option(s) {unknown}; allowed: {allowed_hparams(cls)}"
        )
    return cls, hparams


def build_method(
    cfg: dict[str, Any],
    student: BuiltModel,
    teacher: BuiltModel | None,
    num_classes: int,
    input_shape: tuple[int, int, int],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
) -> DistillationModule:
    """Instantiate the method named by ``cfg['name']`` with the rest of ``cfg`` as its weights."""
    cls, hparams = check_method_cfg(cfg)
    return cls(
        student,
        teacher,
        num_classes=num_classes,
        input_shape=input_shape,
        optimizer=optimizer,
        scheduler=scheduler,
        **hparams,
    )


__all__ = ["METHODS", "DistillationModule", "build_method", "check_method_cfg", "method_class"]
