"""One LightningModule per method; ``build_method`` picks one from ``method.name``.

Every module of this package is imported, so a method is one file with a
``@register_method("<name>")`` class (and, at most, one ``configs/method/<name>.yaml``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.methods.options import parse_options, search_space
from kdexp.methods.registry import METHODS, register_method
from kdexp.models import BuiltModel
from kdexp.registry import import_submodules

# The built-in methods first (the order `choose one of` lists them in), then any other module.
from kdexp.methods.vanilla import VanillaModule  # noqa: E402, I001
from kdexp.methods.kd import KDModule  # noqa: E402
from kdexp.methods.hints import HintsModule  # noqa: E402
from kdexp.methods.at import AttentionTransferModule  # noqa: E402
from kdexp.methods.sp import SimilarityPreservingModule  # noqa: E402
from kdexp.methods.rkd import RelationalKDModule  # noqa: E402
from kdexp.methods.born_again import BornAgainModule  # noqa: E402
from kdexp.methods.dml import DMLModule  # noqa: E402

import_submodules(__name__)


def method_class(name: str) -> type[DistillationModule]:
    return METHODS.get(name)


def allowed_hparams(cls: type[DistillationModule]) -> list[str]:
    """The options a method accepts from its config: the fields of its ``Options``."""
    return [f.name for f in dataclasses.fields(cls.Options)]


def check_method_cfg(cfg: dict[str, Any]) -> tuple[type[DistillationModule], dict[str, Any]]:
    """The method's class and its checked options (the keys given, converted), or a clear error
    naming the unknown or out-of-range key; no data, model or teacher needed."""
    hparams = dict(cfg)
    cls = method_class(hparams.pop("name"))
    options = parse_options(cls.Options, hparams, cls.method_name)
    return cls, {key: getattr(options, key) for key in hparams}


RUN_ARGUMENTS = ("num_classes", "input_shape", "optimizer", "scheduler")  # after student, teacher


def build_method(cfg: dict[str, Any], student: BuiltModel, teacher: BuiltModel | None, *run: Any) -> DistillationModule:
    """Instantiate the method named by ``cfg['name']`` with the rest of ``cfg`` as its options;
    ``run``: DistillationModule's run arguments (num_classes, input_shape, optimizer, scheduler),
    in that order (passed by name: a method's own ``__init__`` takes them as keywords)."""
    cls, hparams = check_method_cfg(cfg)
    if len(run) != len(RUN_ARGUMENTS):
        raise TypeError(f"build_method takes cfg, student, teacher, {', '.join(RUN_ARGUMENTS)}")
    return cls(student, teacher, **dict(zip(RUN_ARGUMENTS, run)), **hparams)


__all__ = [
    "METHODS",
    "AttentionTransferModule",
    "BornAgainModule",
    "DMLModule",
    "DistillationModule",
    "HintsModule",
    "KDModule",
    "RelationalKDModule",
    "SimilarityPreservingModule",
    "VanillaModule",
    "allowed_hparams",
    "build_method",
    "check_method_cfg",
    "method_class",
    "register_method",
    "search_space",
]
