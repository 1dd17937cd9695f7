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
from kdexp.methods.rco import RCOModule
from kdexp.methods.rkd import RelationalKDModule
from kdexp.methods.rocket import RocketModule
from kdexp.methods.sp import SimilarityPreservingModule
from kdexp.methods.takd import TAKDModule
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
    "rocket": RocketModule,
    "rco": RCOModule,
    "takd": TAKDModule,
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


# Options whose value must lie in a range, by name (every method uses the same names).
_POSITIVE = {
    "temperature": "the softmax temperature T divides the logits",
    "dml_temperature": "the softmax temperature divides the logits",
    "p": "the exponent of the attention maps; the paper uses 2",
}


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"method.{key} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"method.{key} must be a finite number, got {value!r}")
    return float(value)


def _integer(key: str, value: Any, minimum: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"method.{key} must be an integer >= {minimum} ({why}), got {value!r}")


def check_hparams(hparams: dict[str, Any]) -> None:
    """Range checks of a method's options, before any data is loaded or a teacher trained.

    Temperatures and exponents > 0; loss weights (``*_weight``, ``kd_weight_end``) >= 0;
    ``generations`` >= 1; a DML cohort of at least 2 registered models; ``hint_epochs`` >= 0.
    """
    from kdexp.models import available_models

    for key, value in hparams.items():
        if key in _POSITIVE:
            if not _number(key, value) > 0:
                raise ValueError(f"method.{key} must be > 0 ({_POSITIVE[key]}), got {value!r}")
        elif key.endswith("_weight") or key == "kd_weight_end":
            if value is None and key == "kd_weight_end":
                continue
            if _number(key, value) < 0:
                raise ValueError(
                    f"method.{key} must be >= 0 (a loss weight; 0 switches the term off), got {value!r}"
                )
    if "generations" in hparams:
        _integer("generations", hparams["generations"], 1, "students trained after the teacher")
    if "hint_epochs" in hparams:
        _integer("hint_epochs", hparams["hint_epochs"], 0, "0 = single stage")
    cohort = hparams.get("cohort")
    if cohort is not None:
        if isinstance(cohort, str) or not isinstance(cohort, (list, tuple)) or len(cohort) < 2:
            raise ValueError(
                f"method.cohort must be a list of at least 2 model names (e.g. [resnet32,resnet32]) "
                f"or null for cohort_size copies of the student, got {cohort!r}"
            )
        unknown = [name for name in cohort if name not in available_models()]
        if unknown:
            raise ValueError(
                f"method.cohort names unknown model(s) {unknown}; registered models are: "
                f"{', '.join(available_models())}"
            )
    elif "cohort_size" in hparams:
        _integer("cohort_size", hparams["cohort_size"], 2, "a cohort learns from its peers")
    if "assistants" in hparams:
        assistants = hparams["assistants"]
        if isinstance(assistants, str) or not isinstance(assistants, (list, tuple)) or not assistants:
            raise ValueError(
                f"method.assistants must be a non-empty list of model names, largest first (e.g. "
                f"[cnn_medium,cnn_small]), got {assistants!r}"
            )
        unknown = [name for name in assistants if name not in available_models()]
        if unknown:
            raise ValueError(
                f"method.assistants names unknown model(s) {unknown}; registered models are: "
                f"{', '.join(available_models())}"
            )


def check_method_cfg(cfg: dict[str, Any]) -> tuple[type[DistillationModule], dict[str, Any]]:
    """The method's class and its options, or a clear error naming the unknown or out-of-range key."""
    hparams = dict(cfg)
    cls = method_class(hparams.pop("name"))
    unknown = sorted(set(hparams) - set(allowed_hparams(cls)))
    if unknown:
        raise ValueError(
            f"method {cfg['name']!r} has no option(s) {unknown}; allowed: {allowed_hparams(cls)}"
        )
    check_hparams(hparams)
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


__all__ = [
    "METHODS",
    "DistillationModule",
    "build_method",
    "check_hparams",
    "check_method_cfg",
    "method_class",
]
