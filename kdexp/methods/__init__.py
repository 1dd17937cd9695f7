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


@dataclasses.dataclass(frozen=True)
class MethodChoice:
    """A config's ``method``, read once: the class it names, its parsed ``Options`` (defaults
    filled in) and the keys the config gave (what results and the HParams row call its own)."""

    cls: type[DistillationModule]
    options: Any
    given: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.cls.method_name

    @property
    def needs_teacher(self) -> bool:
        return self.cls.requires_teacher(self.options)

    def given_values(self) -> dict[str, Any]:
        """The options the config gave, as parsed (converted, checked)."""
        return {key: getattr(self.options, key) for key in self.given}


def choose_method(cfg: dict[str, Any]) -> MethodChoice:
    """The method ``cfg['name']`` names, with the rest of ``cfg`` parsed as its options, or a
    clear ValueError naming the unknown or out-of-range key; no data, model or teacher needed."""
    values = dict(cfg)
    cls = method_class(values.pop("name"))
    return MethodChoice(cls, parse_options(cls.Options, values, cls.method_name), tuple(values))


def check_method_cfg(cfg: dict[str, Any]) -> tuple[type[DistillationModule], dict[str, Any]]:
    """The method's class and its checked options (the keys given, converted)."""
    choice = choose_method(cfg)
    return choice.cls, choice.given_values()


RUN_ARGUMENTS = ("num_classes", "input_shape", "optimizer", "scheduler")  # after student, teacher


def build_method(
    method: MethodChoice | dict[str, Any], student: BuiltModel, teacher: BuiltModel | None, *run: Any
) -> DistillationModule:
    """Instantiate the method ``method`` names (a MethodChoice, or a config dict, parsed here);
    ``run``: DistillationModule's run arguments (num_classes, input_shape, optimizer, scheduler),
    in that order (passed by name: a method's own ``__init__`` takes them as keywords)."""
    choice = method if isinstance(method, MethodChoice) else choose_method(method)
    if len(run) != len(RUN_ARGUMENTS):
        raise TypeError(f"build_method takes cfg, student, teacher, {', '.join(RUN_ARGUMENTS)}")
    return choice.cls(student, teacher, **dict(zip(RUN_ARGUMENTS, run)), options=choice.options)


__all__ = [
    "METHODS",
    "MethodChoice",
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
    "choose_method",
    "method_class",
    "register_method",
    "search_space",
]
