"""Self-describing run outputs: a model card beside each saved model, and loaders that need nothing else.

A finished run folder holds ``student.pt`` (a state_dict) and, next to it, ``student.json``: the
model config that built it (source, name, options), the number of classes, the input shape
(C, H, W), the input normalisation, dtype and quantisation. ``teacher.json`` points at the
teacher's weights (its checkpoint or cache entry). ``load_student(run_dir)`` rebuilds the exact
model from these two files; ``module_from_checkpoint`` rebuilds a whole Lightning module from a
``.ckpt`` alone (what ``DistillationModule.load_from_checkpoint`` calls).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdexp.models import BuiltModel, build_model
from kdexp.tools.files import absolute, write_json
from kdexp.tools.weights import load_state

CARD_FORMAT = "kdexp.model/1"
CHECKPOINT_SUFFIXES = (".ckpt",)


@dataclass
class Artifact:
    """A model rebuilt from a run: the module (eval mode, on the CPU) and its card."""

    module: nn.Module
    card: dict[str, Any]
    built: BuiltModel

    @property
    def num_classes(self) -> int:
        return int(self.card["num_classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.card["input_shape"])  # type: ignore[return-value]


# --- writing ---------------------------------------------------------------------------------
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


def model_card(
    role: str, info: BuiltModel, num_classes: int, input_shape: tuple[int, ...], weights: str | None, **extra: Any
) -> dict[str, Any]:
    """What rebuilds ``info`` without the run's config: source, name, options, classes, input."""
    cfg = dict(info.cfg or {"name": info.name})
    param = next(info.module.parameters(), None)
    return {
        "format": CARD_FORMAT,
        "role": role,
        "name": info.name,
        "source": cfg.get("source", "kdexp"),
        "config": cfg,
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "dtype": str(param.dtype).removeprefix("torch.") if param is not None else "float32",
        "quantization": quantization_of(info.module),
        "weights": weights,
        **extra,
    }


def quantization_of(module: nn.Module) -> dict[str, Any] | None:
    """What a low-precision model's card says of its quantisation (None: a float model): the
    scheme and bit-widths a quantised student declares (``quantization_card``, kdexp.quantize)."""
    describe = getattr(module, "quantization_card", None)
    return describe() if callable(describe) else None


def write_model_cards(output_dir: str | Path, module: Any, datamodule: Any, data_name: str, teacher_info: dict[str, Any]) -> None:
    """``<role>.json`` beside each ``<role>.pt`` of a finished run, and ``teacher.json`` naming
    the teacher's weights file (from ``teacher_info['path']``, absent for in-memory teachers)."""
    output_dir = Path(output_dir)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    normalization = {"mean": list(mean), "std": list(std)} if mean is not None else None
    common = {"data": data_name, "normalization": normalization, "module_class": type(module).__name__}
    for role, info in model_infos(module).items():
        saved = role != "teacher" or type(module).teacher_trainable  # a jointly trained teacher: teacher.pt
        weights = f"{role}.pt" if saved else absolute(teacher_info.get("path"))
        card = model_card(role, info, datamodule.num_classes, datamodule.input_shape, weights, **common)
        write_json(output_dir / f"{role}.json", card)


# --- reading ---------------------------------------------------------------------------------
def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as a kdexp model card: {err}") from None
    missing = {"config", "num_classes", "input_shape"} - set(card)
    if missing:
        raise ValueError(f"{path} is not a kdexp model card (no {sorted(missing)})")
    return card


def roles_in(run_dir: Path) -> list[str]:
    """The saved models of a run folder: ``student``, ``student0``..., ``teacher``."""
    return sorted(p.stem for p in run_dir.glob("*.json") if re.fullmatch(r"student\d*|teacher", p.stem))


def sub_runs(run_dir: Path) -> list[Path]:
    """The sub-run folders of a chain of runs (class-incremental steps, TAKD links) that saved a
    student, in their order (``step2`` before ``step10``)."""
    found = [p.parent for p in run_dir.glob("*/student.json")]
    return sorted(found, key=lambda p: (re.sub(r"\d+$", "", p.name), int(re.search(r"(\d*)$", p.name).group(1) or 0)))


def build_from_card(card: dict[str, Any]) -> BuiltModel:
    """The architecture a card describes, without pretrained weights (the saved weights follow)."""
    cfg = {**card["config"], "weights": None, "pretrained": False}
    return build_model(cfg, int(card["num_classes"]), int(card["input_shape"][0]), tuple(card["input_shape"]))


def load_fitting(built: BuiltModel, state: dict[str, torch.Tensor], card: dict[str, Any], card_path: Path, weights_path: Path) -> None:
    """Load ``state`` into the model ``card`` describes, or a ValueError naming the card's field
    (``num_classes``, ``config``/``input_shape``) and the weights' shapes that disagree with it."""
    try:
        built.module.load_state_dict(state)
        return
    except RuntimeError:
        pass  # described below, in the card's terms
    expected = built.module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [  # an uncalibrated observer's buffers take any shape on loading
        (k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
        if k in state and state[k].shape != v.shape and "fake_quant" not in k and "activation_post_process" not in k
    ]
    what = f"{weights_path} do not fit the model {card_path} describes ({card.get('name')!r}"
    head = f"{built.classifier}.weight"
    for key, saved, built_shape in shapes:
        if key.removeprefix("model.") == head and saved[1:] == built_shape[1:]:
            raise ValueError(
                f"{what}): the card's num_classes={card['num_classes']} but the weights' classifier "
                f"{key} has shape {list(saved)} ({saved[0]} classes); the card was edited or belongs to other weights"
            )
    if shapes:
        key, saved, built_shape = shapes[0]
        detail = f"{key} has shape {list(saved)} in the weights but {list(built_shape)} in the model the card builds"
    else:
        detail = f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
    options = {k: v for k, v in card["config"].items() if k not in ("name", "source")}
    raise ValueError(
        f"{what}): {detail}; the card's config (name {card['config'].get('name')!r}, options {options}) "
        f"or input_shape={list(card['input_shape'])} was edited or belongs to other weights"
    )


def load_artifact(run: str | Path, role: str = "student") -> Artifact:
    """Rebuild ``role`` of a finished run folder (its ``<role>.json`` + weights) or of a ``.ckpt``.

    ``role``: ``student`` (a DML cohort: its best member, or ``student<i>``) or ``teacher``.
    """
    path = Path(run)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return _artifact_from_checkpoint(path, role)
    if not path.is_dir():
        raise FileNotFoundError(f"run={str(run)!r} is neither a run folder nor a .ckpt file")
    card_path = path / f"{role}.json"
    if role == "student" and not card_path.is_file():
        role = _best_member(path) or role
        card_path = path / f"{role}.json"
    if not card_path.is_file():
        found = roles_in(path)
        if not (path / "results.json").is_file():
            why = "it holds no results.json: the run did not finish (resume it with ckpt_path=last, or give its checkpoints/last.ckpt)"
        elif (path / "gen1").is_dir():
            why = "it is a Born-Again chain: each generation's student is in its gen<k>/ folder"
        elif sub_runs(path):
            subs = sub_runs(path)
            why = (
                f"it is a chain of runs whose models are in its sub-runs' folders ({', '.join(p.name for p in subs)}); "
                f"give one, e.g. run={subs[-1]} (the last)"
            )
        elif not found:
            why = "it holds no model cards (a run from before kdexp saved them: give its checkpoints/last.ckpt)"
        else:
            why = f"it saved: {', '.join(found)}"
        raise FileNotFoundError(f"run={str(run)!r} has no {role} to load: {why}")
    card = _read_card(card_path)
    weights = card.get("weights")
    if not weights:
        raise FileNotFoundError(
            f"{card_path} names no weights file (the {role} lived only in memory, e.g. a Born-Again "
            "generation: load that generation's run folder instead)"
        )
    weights_path = Path(weights) if Path(weights).isabsolute() else path / weights
    if not weights_path.is_file():
        raise FileNotFoundError(f"the {role}'s weights {weights_path} (named in {card_path}) do not exist")
    built = build_from_card(card)
    load_fitting(built, load_state(weights_path, built.module), card, card_path, weights_path)
    built.module.eval()
    return Artifact(built.module, card, built)


def _best_member(run_dir: Path) -> str | None:
    """A DML run's student: the cohort member chosen on validation (results.json ``run.best_student``)."""
    try:
        return json.loads((run_dir / "results.json").read_text())["run"].get("best_student")
    except (OSError, ValueError, KeyError):
        return None


def load_student(run: str | Path, role: str = "student") -> nn.Module:
    """The trained student of ``run`` (a run folder or a ``.ckpt``), rebuilt and in eval mode.

    >>> model = kdexp.load_student("outputs/2026-01-01/12-00-00")
    >>> logits = model(images)          # (N, C, H, W) normalised as in training → (N, classes)
    """
    return load_artifact(run, role).module


# --- Lightning checkpoints -------------------------------------------------------------------
def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A kdexp Lightning checkpoint's contents, with a clear error for anything else."""
    from kdexp.tools.weights import unreadable_reason

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
    from kdexp.methods import METHODS, DistillationModule

    classes = {cls.__name__: cls for cls in map(METHODS.get, METHODS.names())}
    cls = classes.get(hp.get("module_class", ""), expected)
    if cls is None or cls is DistillationModule:
        raise ValueError(f"{path}: cannot tell which method wrote it; call <MethodModule>.load_from_checkpoint")
    if expected is not None and expected is not DistillationModule and not issubclass(cls, expected):
        raise ValueError(f"{path} was written by {cls.__name__}, not {expected.__name__}")
    return cls


def module_from_checkpoint(
    path: str | Path, map_location: Any = None, strict: bool = True, expected: type | None = None, teacher: BuiltModel | None = None, **overrides: Any
) -> Any:
    """Rebuild a method module from a kdexp checkpoint alone and load its weights.

    The student (and a DML cohort) come from the recorded model configs; the teacher from its
    recorded weights file (``teacher.checkpoint``: a checkpoint or a cache entry; an RCO route: its
    anchors' files) unless ``teacher`` (a BuiltModel) is given; a teacher trained with the student
    (``teacher_trainable``) from the checkpoint itself. ``overrides`` replace recorded method
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
        if cls.teacher_trainable:  # its weights are in the checkpoint's state_dict
            teacher = _placeholder_teacher(hp)
        else:
            teacher = _rebuild_teacher(path, teacher_cfg, num_classes, input_shape)
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


def _teacher_architecture(cfg: dict[str, Any], num_classes: int, input_shape: tuple[int, ...]) -> BuiltModel:
    """The recorded teacher's architecture, fresh: its own class count where one is recorded (the
    previous step of a class-incremental run), one model per anchor for a route (RCO)."""
    from kdexp.models import architecture_cfg

    arch = {k: v for k, v in architecture_cfg(cfg).items() if k not in ("route", "num_classes")}
    classes = int(cfg.get("num_classes") or num_classes)
    built = build_model(arch, classes, int(input_shape[0]), tuple(input_shape))
    if not cfg.get("route"):
        return built
    from kdexp.teacher.route import AnchorRoute

    paths = list(cfg["route"])
    anchors = [build_model(arch, classes, int(input_shape[0]), tuple(input_shape)).module for _ in paths]
    route = AnchorRoute(anchors, [str(p) for p in paths], [None] * len(paths))
    return BuiltModel(route, built.name, built.stages, built.classifier, built.cfg)


def _rebuild_teacher(path: str | Path, cfg: dict[str, Any], num_classes: int, input_shape: tuple[int, ...]) -> BuiltModel:
    from kdexp.tools.weights import load_weights

    sources = list(cfg["route"]) if cfg.get("route") else [cfg.get("checkpoint")]
    missing = [s for s in sources if not s or not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: the teacher's recorded weights {missing[0]!r} are not available; pass the teacher "
            "yourself: load_from_checkpoint(path, teacher=kdexp.artifacts.load_artifact(run, 'teacher').built)"
        )
    teacher = _teacher_architecture(cfg, num_classes, input_shape)
    models = list(teacher.module.anchors) if cfg.get("route") else [teacher.module]
    classes = int(cfg.get("num_classes") or num_classes)
    for model, source in zip(models, sources):
        load_weights(BuiltModel(model, teacher.name, teacher.stages, teacher.classifier, teacher.cfg), source, classes)
    teacher.module.eval().requires_grad_(False)
    return teacher


def _artifact_from_checkpoint(path: Path, role: str) -> Artifact:
    checkpoint = read_checkpoint(path)
    hp = checkpoint["hyper_parameters"]
    card = {
        "format": CARD_FORMAT,
        "role": role,
        "num_classes": hp["num_classes"],
        "input_shape": hp["input_shape"],
        "checkpoint": str(path),
    }
    trained_with_student = checkpoint_method(path, hp).teacher_trainable
    if role == "teacher" and not trained_with_student:
        cfg = hp["models"].get("teacher")
        if cfg is None:
            raise ValueError(f"{path} was written by a method without a teacher")
        built = _rebuild_teacher(path, cfg, int(hp["num_classes"]), tuple(hp["input_shape"]))
        if cfg.get("route"):  # RCO: the converged teacher, the route's last anchor
            built = BuiltModel(built.module.anchors[-1], built.name, built.stages, built.classifier, built.cfg)
        card["num_classes"] = int(cfg.get("num_classes") or hp["num_classes"])
        return Artifact(built.module, {**card, "name": built.name, "config": cfg, "quantization": None}, built)
    module = module_from_checkpoint(path, teacher=None if trained_with_student else _placeholder_teacher(hp))
    infos = model_infos(module)
    if role == "student" and role not in infos:  # a DML cohort: the member its finished run chose
        role = _best_member(path.parent.parent) or role
    if role not in infos:
        raise ValueError(f"{path} holds no {role!r}; it holds: {', '.join(infos)} (give role=<one of them>)")
    built = infos[role]
    extra = {"name": built.name, "config": built.cfg, "quantization": quantization_of(built.module)}
    return Artifact(built.module.eval(), {**card, **extra}, built)


def _placeholder_teacher(hp: dict[str, Any]) -> BuiltModel | None:
    """The teacher's architecture with fresh weights: enough to rebuild a module whose student is
    wanted, or whose jointly trained teacher's weights are in the checkpoint itself."""
    cfg = hp["models"].get("teacher")
    if cfg is None:
        return None
    return _teacher_architecture(cfg, int(hp["num_classes"]), tuple(hp["input_shape"]))
