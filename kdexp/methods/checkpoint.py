"""A method module from a kdexp Lightning checkpoint alone (``DistillationModule.load_from_checkpoint``):
the checkpoint read with a clear error, the method that wrote it, the student from its recorded
config, the teacher from its recorded weights file (or route), and the models of every role."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from kdexp.methods.registry import METHODS
from kdexp.models import BuiltModel, architecture_cfg, build_model
from kdexp.models.route import AnchorRoute
from kdexp.tools.weights import load_weights, unreadable_reason


def model_infos(module: Any) -> dict[str, BuiltModel]:
    """The BuiltModel of every reported role of a method module (``student``, ``student<i>``, ``teacher``)."""
    infos: dict[str, BuiltModel] = {}
    members = getattr(module, "member_infos", None)
    for role in module.report_models():
        if role == "teacher":
            infos[role] = module.teacher_info
        elif role == "student":
            infos[role] = module.student_info
        elif members is not None and re.fullmatch(r"student\d+", role):
            infos[role] = members[int(role[7:])]
    return infos


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A kdexp Lightning checkpoint's contents, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} cannot be read as a Lightning checkpoint: {unreadable_reason(path, err)}") from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "models" not in hparams:
        raise ValueError(
            f"{path} does not record its model configs (hyper_parameters['models']): it is not a kdexp "
            "checkpoint, or one written before kdexp recorded them; build the module yourself and "
            "pass it to trainer.fit(ckpt_path=...)"
        )
    return checkpoint


def checkpoint_method(path: str | Path, hp: dict[str, Any], expected: type | None = None) -> type:
    """The method class that wrote a checkpoint (its recorded ``module_class``)."""
    classes = {cls.__name__: cls for cls in map(METHODS.get, METHODS.names())}
    cls = classes.get(hp.get("module_class", ""), expected)
    if cls is None or cls.method_name == "base":  # the base class itself: no method recorded
        raise ValueError(f"{path}: cannot tell which method wrote it; call <MethodModule>.load_from_checkpoint")
    if expected is not None and expected.method_name != "base" and not issubclass(cls, expected):
        raise ValueError(f"{path} was written by {cls.__name__}, not {expected.__name__}")
    return cls


def module_from_checkpoint(
    path: str | Path, map_location: Any = None, strict: bool = True, expected: type | None = None, teacher: BuiltModel | None = None, **overrides: Any
) -> Any:
    """Rebuild a method module from a kdexp checkpoint alone and load its weights.

    The student (and a DML cohort) come from the recorded model configs; the teacher from its
    recorded weights file (``teacher.checkpoint``: a checkpoint or a cache entry; an RCO route: its
    anchors' files) unless ``teacher`` (a BuiltModel) is given; a teacher trained with the student
    (``teacher_use.trained_with_student``) from the checkpoint itself. ``overrides`` replace recorded method
    options. As Lightning does, ``on_load_checkpoint`` runs before the weights are loaded (CRD
    sizes its memory bank from the file there).
    """
    checkpoint = read_checkpoint(path, map_location)
    hp = checkpoint["hyper_parameters"]
    cls = checkpoint_method(path, hp, expected)
    num_classes, input_shape = int(hp["num_classes"]), tuple(hp["input_shape"])
    student = build_model({**hp["models"]["student"], "weights": None, "pretrained": False}, num_classes, input_shape[0], input_shape)
    teacher_cfg = hp["models"].get("teacher")
    if teacher is None and teacher_cfg is not None:
        if cls.teacher_use.trained_with_student:  # its weights are in the checkpoint's state_dict
            teacher = placeholder_teacher(hp)
        else:
            teacher = rebuild_teacher(path, teacher_cfg, num_classes, input_shape)
    module = cls(
        student,
        teacher,
        num_classes=num_classes,
        input_shape=input_shape,
        optimizer=hp["optimizer"],
        scheduler=hp["scheduler"],
        **{**hp["method"], **overrides},
    )
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    module.hparams["models"]["teacher"] = teacher_cfg  # keep the recorded source for the next save
    return module.eval()


def teacher_architecture(cfg: dict[str, Any], num_classes: int, input_shape: tuple[int, ...]) -> BuiltModel:
    """The recorded teacher's architecture, fresh: its own class count where one is recorded (the
    previous step of a class-incremental run), one model per anchor for a route (RCO)."""
    arch = {k: v for k, v in architecture_cfg(cfg).items() if k not in ("route", "num_classes")}
    classes = int(cfg.get("num_classes") or num_classes)
    built = build_model(arch, classes, int(input_shape[0]), tuple(input_shape))
    if not cfg.get("route"):
        return built
    paths = list(cfg["route"])
    anchors = [build_model(arch, classes, int(input_shape[0]), tuple(input_shape)).module for _ in paths]
    route = AnchorRoute(anchors, [str(p) for p in paths], [None] * len(paths))
    return BuiltModel(route, built.name, built.stages, built.classifier, built.cfg)


def rebuild_teacher(path: str | Path, cfg: dict[str, Any], num_classes: int, input_shape: tuple[int, ...]) -> BuiltModel:
    """The recorded teacher, with its recorded weights (a checkpoint or cache entry; a route's anchors)."""
    sources = list(cfg["route"]) if cfg.get("route") else [cfg.get("checkpoint")]
    missing = [s for s in sources if not s or not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: the teacher's recorded weights {missing[0]!r} are not available; pass the teacher "
            "yourself: load_from_checkpoint(path, teacher=kdexp.saved.load.load_artifact(run, 'teacher').built)"
        )
    teacher = teacher_architecture(cfg, num_classes, input_shape)
    models = list(teacher.module.anchors) if cfg.get("route") else [teacher.module]
    classes = int(cfg.get("num_classes") or num_classes)
    for model, source in zip(models, sources):
        load_weights(BuiltModel(model, teacher.name, teacher.stages, teacher.classifier, teacher.cfg), source, classes)
    teacher.module.eval().requires_grad_(False)
    return teacher


def placeholder_teacher(hp: dict[str, Any]) -> BuiltModel | None:
    """The teacher's architecture with fresh weights: enough to rebuild a module whose student is
    wanted, or whose jointly trained teacher's weights are in the checkpoint itself."""
    cfg = hp["models"].get("teacher")
    if cfg is None:
        return None
    return teacher_architecture(cfg, int(hp["num_classes"]), tuple(hp["input_shape"]))
