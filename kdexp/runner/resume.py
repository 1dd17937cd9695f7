"""What defines a run, stored in its checkpoints, and the check that a resume continues that run.

Every training checkpoint carries ``checkpoint["kdexp"]["fingerprint"]``: the student, the method
and its options, the data (and batch size), the teacher's identity, the optimizer, the schedule,
the seed and gradient accumulation. ``ckpt_path=`` refuses a checkpoint whose fingerprint differs
from the run's, listing every difference, before any work. Two things may change on a resume:
``trainer.max_epochs`` can grow (an extension) when the schedule does not depend on it (``none``,
``multistep``), and options that do not change the numbers (workers, folders, logging).

To start a *new* run from a checkpoint's weights instead (fresh optimizer, schedule and epochs),
give ``init_weights=<a .ckpt or student.pt>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from kdexp.data import data_identity
from kdexp.tools.weights import read_torch

# Data options that do not change what is trained on (where it is read from, how fast).
DATA_RUNTIME_KEYS = {"root", "download", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor"}
# Schedules whose shape is fixed by trainer.max_epochs: a run on them cannot be stretched.
EPOCH_BOUND_SCHEDULES = {"onecycle", "cosine"}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def run_fingerprint(cfg: DictConfig, needs_teacher: bool) -> dict[str, Any]:
    """The options that define the run's numbers (a plain dict, stored in every checkpoint)."""
    data = {k: v for k, v in data_identity(_plain(cfg.data) or {}).items() if k not in DATA_RUNTIME_KEYS}
    teacher = _plain(cfg.teacher) if needs_teacher else None
    if isinstance(teacher, dict):
        teacher = {k: v for k, v in teacher.items() if k not in ("cache",)}
    return {
        "student": _plain(cfg.student),
        "teacher": teacher,
        "method": _plain(cfg.method),
        "data": data,
        "optimizer": _plain(cfg.optimizer),
        "scheduler": _plain(cfg.scheduler),
        "seed": cfg.seed,
        "trainer": {"accumulate_grad_batches": cfg.trainer.get("accumulate_grad_batches", 1)},
    }


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): tree}


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: checkpoint <a>, now <b>`` for every key whose value differs (dotted key names)."""
    old, new = _flat(saved), _flat(current)
    missing = object()
    return [
        f"{key}: checkpoint {old.get(key, '(unset)')!r}, now {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


def check_resume(cfg: DictConfig, checkpoint: dict[str, Any], needs_teacher: bool, where: str) -> None:
    """Raise ValueError if ``checkpoint`` (read from ``where``) does not belong to this run, or the
    run cannot be continued to ``trainer.max_epochs``. Checkpoints written before fingerprints
    existed are accepted as they are."""
    saved = (checkpoint.get("kdexp") or {}).get("fingerprint")
    if saved is not None:
        diffs = differences(saved, run_fingerprint(cfg, needs_teacher))
        if diffs:
            raise ValueError(
                f"ckpt_path={cfg.ckpt_path} ({where}) belongs to a different run; resuming would continue "
                f"it under other settings. Differences: {'; '.join(diffs)}. Resume with the original "
                "settings, or start a new run from these weights with init_weights=<that checkpoint> "
                "(fresh optimizer, schedule and epochs) in a new run folder"
            )
    done = int(checkpoint.get("epoch", 0)) + 1  # epochs finished (the checkpoint's epoch is 0-based)
    saved_max = (checkpoint.get("kdexp") or {}).get("max_epochs")
    max_epochs = int(cfg.trainer.max_epochs)
    schedule = str(cfg.scheduler.get("name", "none"))
    if saved_max is not None and max_epochs != saved_max and schedule in EPOCH_BOUND_SCHEDULES:
        raise ValueError(
            f"trainer.max_epochs={max_epochs} but the checkpoint ({where}) was trained for "
            f"trainer.max_epochs={saved_max} with scheduler.name={schedule}, whose learning rate is laid "
            f"out over exactly those epochs and cannot be stretched. Resume with trainer.max_epochs="
            f"{saved_max}, or start a new run from these weights with init_weights=<that checkpoint>"
        )
    if max_epochs < done:
        raise ValueError(
            f"trainer.max_epochs={max_epochs} but the checkpoint ({where}) has already finished {done} "
            f"epochs; give trainer.max_epochs >= {done} to continue it"
        )


class FingerprintCheckpoint(pl.Callback):
    """Adds the run's fingerprint and ``max_epochs`` to every checkpoint the trainer writes."""

    def __init__(self, fingerprint: dict[str, Any], max_epochs: int) -> None:
        self.fingerprint, self.max_epochs = fingerprint, max_epochs

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["kdexp"] = {"fingerprint": self.fingerprint, "max_epochs": self.max_epochs}


def checkpoint_epoch(path: str | Path | None) -> int | None:
    """The 0-based epoch index a checkpoint file holds (the end of that epoch), or None."""
    if not path or not Path(path).is_file():
        return None
    try:
        return int(read_torch(path, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 - only used to describe the checkpoint in a message
        return None
