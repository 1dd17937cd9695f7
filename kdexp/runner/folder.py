"""The run folder: where a run's checkpoints, weights and records are, in one place.

    <output_dir>/results.json         the record (kdexp.run_record): finished, or the failure
    <output_dir>/<role>.pt            the trained students' weights
    <output_dir>/<role>.json          their model cards (kdexp.models.card; teacher.json names the
                                      teacher's weights file): what kdexp.load_student reads
    <checkpoint dir>/last.ckpt        the newest epoch (callbacks.last_checkpoint.dirpath,
                                      default <output_dir>/checkpoints), what ckpt_path=last,
                                      auto-resume and failure messages name
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kdexp.errors import KdexpError, RunInterrupted
from kdexp.runner.resume import check_resume, checkpoint_epoch
from kdexp.run_record import RESULTS_FILE, failure_record, is_finished, record_failure
from kdexp.methods.checkpoint import model_infos
from kdexp.models.card import model_card
from kdexp.tools.files import absolute, replace, save_torch, write_json
from kdexp.tools.weights import read_torch, unreadable_reason

log = logging.getLogger("kdexp")
LAST = "last.ckpt"


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where this run's last.ckpt goes (the last_checkpoint callback's dirpath)."""
    dirpath = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath", default=None) or OmegaConf.select(
        cfg, "callbacks.model_checkpoint.dirpath", default=None
    )
    return Path(dirpath) if dirpath else Path(cfg.paths.output_dir) / "checkpoints"


def last_checkpoint_path(cfg: DictConfig) -> Path:
    return checkpoint_dir(cfg) / LAST


def last_checkpoint(cfg: DictConfig) -> str | None:
    path = last_checkpoint_path(cfg)
    return str(path) if path.is_file() else None


def describe_last_checkpoint(cfg: DictConfig) -> str:
    """``<path> (the end of epoch index N)``, or what to do when no epoch finished."""
    last = last_checkpoint(cfg)
    if last is None:
        return "none yet (no epoch finished: a rerun starts over)"
    epoch = checkpoint_epoch(last)
    return f"{last} (it holds the end of epoch {epoch}, 0-based)" if epoch is not None else last


def resolve_ckpt_path(cfg: DictConfig, needs_teacher: bool, missing_ok: bool = False) -> str | None:
    """``ckpt_path``: null, ``last`` (this run folder's last.ckpt) or a file path (read_ckpt)."""
    found = read_ckpt(cfg, needs_teacher, missing_ok)
    return found[0] if found else None


def read_ckpt(cfg: DictConfig, needs_teacher: bool, missing_ok: bool = False) -> tuple[str, int] | None:
    """The checkpoint ``ckpt_path`` names (null, ``last``: this run folder's last.ckpt, or a file
    path) and the 0-based epoch it ends, read once (mmap: its structure, not its tensors).

    Fails before any training if the checkpoint is missing or is not a Lightning training
    checkpoint of this run's settings; with ``missing_ok`` a missing ``last`` means "start afresh"
    (a chain's later runs, which have not started yet).
    """
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    path = last_checkpoint_path(cfg) if str(value) == "last" else Path(str(value))
    if not path.is_file():
        if str(value) == "last":
            if missing_ok:
                return None
            raise ValueError(
                f"ckpt_path=last: there is no checkpoint to resume in this run folder ({path} does not "
                "exist); rerun in the interrupted run's folder (hydra.run.dir=<that folder>) or give "
                "ckpt_path=<path to a .ckpt file>"
            )
        raise FileNotFoundError(f"ckpt_path={str(value)!r} does not exist")
    try:
        # mmap: reads the structure, not the tensors; weights_only: plain containers and tensors only.
        checkpoint = read_torch(path, mmap=True)
    except Exception as err:  # truncated, foreign or not a torch file
        raise ValueError(
            f"ckpt_path={value} ({path}) cannot be read as a Lightning checkpoint: "
            f"{unreadable_reason(path, err)}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "epoch"} <= set(checkpoint):
        raise ValueError(
            f"ckpt_path={str(value)!r} is not a Lightning training checkpoint (expected the "
            "'state_dict', 'loops' and 'epoch' of a kdexp run's checkpoints/*.ckpt); a teacher's "
            "weights go in teacher.checkpoint"
        )
    check_resume(cfg, checkpoint, needs_teacher, str(path))
    return str(path), int(checkpoint["epoch"])


def archive_finished(output_dir: Path) -> None:
    """Keep an earlier finished run's results.json and weights in this folder under stamped names.

    Called once the new attempt has trained and tested, just before it writes its own results:
    ``results.json`` becomes ``results.<time>.json`` (which ``kdexp-report`` does not read), the
    trained models' weights ``<role>.pt`` become ``<role>.<time>.pt`` and their model cards
    ``<role>.json`` (and ``teacher.json``) ``<role>.<time>.json``. A failed attempt leaves them as they were.
    """
    previous = output_dir / RESULTS_FILE
    if not is_finished(output_dir):
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(previous.stat().st_mtime))
    weights = [p for p in output_dir.glob("*.pt") if re.fullmatch(r"[^.]+\.pt", p.name)]  # not the stamped ones
    cards = [p.with_suffix(".json") for p in weights] + [output_dir / "teacher.json"]
    for path in sorted({previous, *weights, *(c for c in cards if c.is_file())}):
            target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
            replace(path, target)
            log.info("Kept the earlier finished run's %s as %s", path.name, target.name)


def save_models(output_dir: Path, module: Any, datamodule: Any, data_name: str, teacher_info: dict[str, Any]) -> None:
    """A finished run's models: ``<role>.pt`` for each trained one, and the model cards beside
    them (``<role>.json``, ``teacher.json``; kdexp.models.card)."""
    for role, model in module.report_models().items():
        if role != "teacher" or type(module).teacher_use.trained_with_student:  # a jointly trained teacher is a result too
            save_weights(model.state_dict(), output_dir / f"{role}.pt")
    write_model_cards(output_dir, module, datamodule, data_name, teacher_info)


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save through a buffer and the atomic writer: a write error is an OSError naming
    ``path``, and a crash never leaves a half-written file."""
    save_torch(path, state)


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run in its failure record (the fields ``kdexp-report`` groups by)."""
    info = {
        key: OmegaConf.select(cfg, path)
        for key, path in (("method", "method.name"), ("data", "data.name"), ("teacher", "teacher.name"),
                          ("student", "student.name"), ("seed", "seed"), ("output_dir", "paths.output_dir"))
    }
    with contextlib.suppress(Exception):  # outside a Hydra run (tests, the Python API)
        from hydra.core.hydra_config import HydraConfig

        info["overrides"] = list(HydraConfig.get().overrides.task)
    return info


def record_run_failure(cfg: DictConfig, err: BaseException) -> None:
    """Record a run that stopped in its results.json (never over a finished run's results)."""
    try:
        kind = getattr(err, "kind", None) or "crashed"
        message = str(err) if isinstance(err, KdexpError) else f"{type(err).__name__}: {err}"
        failure = failure_record(
            kind,
            message,
            epoch=getattr(err, "epoch", None),
            step=getattr(err, "step", None),
            last_checkpoint=getattr(err, "last_checkpoint", None) or last_checkpoint(cfg),
        )
        if isinstance(err, RunInterrupted):
            failure["signal"] = err.signal_name
        record_failure(cfg.paths.output_dir, run_info(cfg), failure)
    except Exception:  # noqa: BLE001 - recording must never hide the original error
        log.debug("could not record the failure", exc_info=True)


def write_pictures(models: dict[str, Any], datamodule: Any, output_dir: str | Path, loggers: list[Any]) -> None:
    """Pictures a model draws of itself (a soft decision tree's filters, leaves and paths), as PNGs
    in the run folder and images in TensorBoard (kdexp.models.soft_tree_picture)."""
    from kdexp.models.soft_tree_picture import write_tree_pictures

    write_tree_pictures(models, datamodule, output_dir, loggers)


def write_model_cards(output_dir: str | Path, module: Any, datamodule: Any, data_name: str, teacher_info: dict[str, Any]) -> None:
    """``<role>.json`` beside each ``<role>.pt`` of a finished run, and ``teacher.json`` naming
    the teacher's weights file (from ``teacher_info['path']``, absent for in-memory teachers)."""
    output_dir = Path(output_dir)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    normalization = {"mean": list(mean), "std": list(std)} if mean is not None else None
    common = {"data": data_name, "normalization": normalization, "module_class": type(module).__name__}
    for role, info in model_infos(module).items():
        saved = role != "teacher" or type(module).teacher_use.trained_with_student  # a jointly trained teacher: teacher.pt
        weights = f"{role}.pt" if saved else absolute(teacher_info.get("path"))
        card = model_card(role, info, datamodule.num_classes, datamodule.input_shape, weights, **common)
        write_json(output_dir / f"{role}.json", card)
