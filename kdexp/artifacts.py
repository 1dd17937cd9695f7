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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdexp.models import BuiltModel, build_model

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


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename): a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(tmp, path)


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
        "quantization": None,  # a dynamic/static int8 model would name its scheme here
        "weights": weights,
        **extra,
    }


def write_model_cards(output_dir: str | Path, module: Any, datamodule: Any, data_name: str, teacher_info: dict[str, Any]) -> None:
    """``<role>.json`` beside each ``<role>.pt`` of a finished run, and ``teacher.json`` naming
    the teacher's weights file (from ``teacher_info['path']``, absent for in-memory teachers)."""
    output_dir = Path(output_dir)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    normalization = {"mean": list(mean), "std": list(std)} if mean is not None else None
    common = {"data": data_name, "normalization": normalization, "module_class": type(module).__name__}
    for role, info in model_infos(module).items():
        weights = f"{role}.pt" if role != "teacher" else _absolute(teacher_info.get("path"))
        card = model_card(role, info, datamodule.num_classes, datamodule.input_shape, weights, **common)
        write_json(output_dir / f"{role}.json", card)


def _absolute(path: str | None) -> str | None:
    """A weights path that still works from another working directory."""
    return str(Path(path).resolve()) if path else None


def record_teacher_weights(module: Any, teacher_info: dict[str, Any]) -> None:
    """Put the teacher's weights file in the module's hyperparameters, so a checkpoint can rebuild it."""
    teacher = module.hparams.get("models", {}).get("teacher")
    if teacher is not None and teacher_info.get("path"):
        teacher["checkpoint"] = _absolute(teacher_info["path"])


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


def build_from_card(card: dict[str, Any]) -> BuiltModel:
    """The architecture a card describes, without pretrained weights (the saved weights follow)."""
    cfg = {**card["config"], "weights": None, "pretrained": False}
    return build_model(cfg, int(card["num_classes"]), int(card["input_shape"][0]))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.pt`` (kdexp's own, a teacher cache entry or a checkpoint), on the CPU."""
    from kdexp.teachers import extract_state_dict, unreadable_reason

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, unsafe pickle
        raise ValueError(f"{path} cannot be read as weights: {unreadable_reason(path, err)}") from None
    return extract_state_dict(blob)


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
    weights_path = Path(weights) if Path(weights).is_absolute() else path / weights
    if not weights_path.is_file():
        raise FileNotFoundError(f"the {role}'s weights {weights_path} (named in {card_path}) do not exist")
    built = build_from_card(card)
    built.module.load_state_dict(load_state(weights_path))
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
    from kdexp.teachers import unreadable_reason

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


def module_from_checkpoint(
    path: str | Path, map_location: Any = None, strict: bool = True, expected: type | None = None, teacher: BuiltModel | None = None, **overrides: Any
) -> Any:
    """Rebuild a method module from a kdexp checkpoint alone and load its weights.

    The student (and a DML cohort) come from the recorded model configs; the teacher from its
    recorded weights file (``teacher.checkpoint``: a checkpoint or a cache entry) unless
    ``teacher`` (a BuiltModel) is given. ``overrides`` replace recorded method options.
    """
    from kdexp.methods import METHODS, DistillationModule

    checkpoint = read_checkpoint(path, map_location)
    hp = checkpoint["hyper_parameters"]
    classes = {cls.__name__: cls for cls in map(METHODS.get, METHODS.names())}
    cls = classes.get(hp.get("module_class", ""), expected)
    if cls is None or cls is DistillationModule:
        raise ValueError(f"{path}: cannot tell which method wrote it; call <MethodModule>.load_from_checkpoint")
    if expected is not None and expected is not DistillationModule and not issubclass(cls, expected):
        raise ValueError(f"{path} was written by {cls.__name__}, not {expected.__name__}")
    num_classes, input_shape = int(hp["num_classes"]), tuple(hp["input_shape"])
    student = build_model({**hp["models"]["student"], "weights": None, "pretrained": False}, num_classes, input_shape[0])
    teacher_cfg = hp["models"].get("teacher")
    if teacher is None and teacher_cfg is not None:
        teacher = _rebuild_teacher(path, teacher_cfg, num_classes, input_shape[0])
    module = cls(
        student,
        teacher,
        num_classes=num_classes,
        input_shape=input_shape,
        optimizer=hp["optimizer"],
        scheduler=hp["scheduler"],
        **{**hp["method"], **overrides},
    )
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    module.hparams["models"]["teacher"] = teacher_cfg  # keep the recorded source for the next save
    module.on_load_checkpoint(checkpoint)
    return module.eval()


def _rebuild_teacher(path: str | Path, cfg: dict[str, Any], num_classes: int, channels: int) -> BuiltModel:
    from kdexp.teachers import architecture_cfg, load_weights

    source = cfg.get("checkpoint")
    if not source or not Path(source).is_file():
        raise FileNotFoundError(
            f"{path}: the teacher's recorded weights {source!r} are not available; pass the teacher "
            "yourself: load_from_checkpoint(path, teacher=kdexp.artifacts.load_artifact(run, 'teacher').built)"
        )
    teacher = build_model(architecture_cfg(cfg), num_classes, channels)
    load_weights(teacher, source, num_classes)
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
        "quantization": None,
        "checkpoint": str(path),
    }
    if role == "teacher":
        cfg = hp["models"].get("teacher")
        if cfg is None:
            raise ValueError(f"{path} was written by a method without a teacher")
        built = _rebuild_teacher(path, cfg, int(hp["num_classes"]), int(hp["input_shape"][0]))
        return Artifact(built.module, {**card, "name": built.name, "config": cfg}, built)
    module = module_from_checkpoint(path, teacher=_placeholder_teacher(hp))
    infos = model_infos(module)
    if role not in infos:
        raise ValueError(f"{path} holds no {role!r}; it holds: {', '.join(r for r in infos if r != 'teacher')}")
    built = infos[role]
    return Artifact(built.module.eval(), {**card, "name": built.name, "config": built.cfg}, built)


def _placeholder_teacher(hp: dict[str, Any]) -> BuiltModel | None:
    """The teacher's architecture with fresh weights: enough to rebuild a module whose student is wanted."""
    cfg = hp["models"].get("teacher")
    if cfg is None:
        return None
    from kdexp.teachers import architecture_cfg

    return build_model(architecture_cfg(cfg), int(hp["num_classes"]), int(hp["input_shape"][0]))
