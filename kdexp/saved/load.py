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

import kdexp.methods  # noqa: F401 - every method registered: a checkpoint names its method's class
from kdexp.methods.checkpoint import checkpoint_method, model_infos, module_from_checkpoint, placeholder_teacher, read_checkpoint, rebuild_teacher
from kdexp.models import BuiltModel
from kdexp.models.card import CARD_FORMAT, build_from_card, quantization_of, read_card
from kdexp.tools.weights import load_state

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


# --- reading ---------------------------------------------------------------------------------
def roles_in(run_dir: Path) -> list[str]:
    """The saved models of a run folder: ``student``, ``student0``..., ``teacher``."""
    return sorted(p.stem for p in run_dir.glob("*.json") if re.fullmatch(r"student\d*|teacher", p.stem))


def sub_runs(run_dir: Path) -> list[Path]:
    """The sub-run folders of a chain of runs (class-incremental steps, TAKD links) that saved a
    student, in their order (``step2`` before ``step10``)."""
    found = [p.parent for p in run_dir.glob("*/student.json")]
    return sorted(found, key=lambda p: (re.sub(r"\d+$", "", p.name), int(re.search(r"(\d*)$", p.name).group(1) or 0)))


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
    card = read_card(card_path)
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
    trained_with_student = checkpoint_method(path, hp).teacher_use.trained_with_student
    if role == "teacher" and not trained_with_student:
        cfg = hp["models"].get("teacher")
        if cfg is None:
            raise ValueError(f"{path} was written by a method without a teacher")
        built = rebuild_teacher(path, cfg, int(hp["num_classes"]), tuple(hp["input_shape"]))
        if cfg.get("route"):  # RCO: the converged teacher, the route's last anchor
            built = BuiltModel(built.module.anchors[-1], built.name, built.stages, built.classifier, built.cfg)
        card["num_classes"] = int(cfg.get("num_classes") or hp["num_classes"])
        return Artifact(built.module, {**card, "name": built.name, "config": cfg, "quantization": None}, built)
    module = module_from_checkpoint(path, teacher=None if trained_with_student else placeholder_teacher(hp))
    infos = model_infos(module)
    if role == "student" and role not in infos:  # a DML cohort: the member its finished run chose
        role = _best_member(path.parent.parent) or role
    if role not in infos:
        raise ValueError(f"{path} holds no {role!r}; it holds: {', '.join(infos)} (give role=<one of them>)")
    built = infos[role]
    extra = {"name": built.name, "config": built.cfg, "quantization": quantization_of(built.module)}
    return Artifact(built.module.eval(), {**card, **extra}, built)


