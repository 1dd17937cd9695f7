"""Callbacks that keep a run reproducible and its outputs safe.

Lightning callbacks (configs/callbacks/default.yaml):

- :class:`FiniteLossGuard` stops training at the first non-finite loss, *before* its backward pass
  and optimizer step, and refuses to write a checkpoint of non-finite weights, so ``last.ckpt``
  always holds the last good epoch.
- :class:`EpochSeed` reseeds every RNG at the start of each training epoch from ``(seed, epoch)``,
  so a run resumed from an end-of-epoch checkpoint sees the same data order, augmentation and
  dropout as an uninterrupted one.

Hydra callback (configs/hydra/default.yaml):

- :class:`OutputDirCheck` checks that the run (or sweep) folder can be created and written before
  Hydra creates it, and stops with a one-line error naming the path instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

# Errors of a folder that cannot take files: permissions, read-only or full file system, quota.
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); the message says where."""


class FiniteLossGuard(pl.Callback):
    """Stop at the first non-finite ``train/loss``, naming the epoch, the step and every loss term.

    The check runs in ``on_before_backward``, so the bad step never updates the weights; and
    ``on_save_checkpoint`` refuses to save non-finite weights (e.g. an infinite gradient from a
    finite loss on an epoch's last step), so the checkpoint on disk stays the last good one.
    The loss terms are read from ``pl_module.last_loss_terms`` (name → (weight, value)) when the
    module records them (every kdexp method does).
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        terms = getattr(pl_module, "last_loss_terms", None) or {}
        listed = ", ".join(
            f"{name}_loss={float(value):.4g} (weight {weight:g})" for name, (weight, value) in terms.items()
        )
        raise NonFiniteLossError(
            f"train/loss is {float(loss.detach()):.4g} at epoch {trainer.current_epoch}, global step "
            f"{trainer.global_step}" + (f"; its terms: {listed}" if listed else "")
        )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [
            name
            for name, value in checkpoint.get("state_dict", {}).items()
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if bad:
            raise NonFiniteLossError(
                f"the weights became non-finite by the end of epoch {trainer.current_epoch} "
                f"(global step {trainer.global_step}; e.g. {bad[:3]}); this checkpoint was not saved"
            )


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) without Lightning's log line."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSeed(pl.Callback):
    """Reseed every RNG at each training epoch's start from ``seed`` and the epoch number.

    The data order of a shuffled DataLoader is drawn from torch's global RNG when the epoch's
    iterator is created (after ``on_train_epoch_start``), and augmentation and dropout draw from it
    during the epoch; checkpoints do not hold RNG states. Reseeding per epoch makes every epoch
    a function of (seed, epoch), so a run resumed at an epoch boundary continues exactly as the
    uninterrupted run would. (Multi-GPU runs shuffle with Lightning's DistributedSampler, which
    seeds by epoch as well.)
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(self.seed * 1_000_003 + trainer.current_epoch + 1)


# --- the output folder ---------------------------------------------------------------------------
def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be written under ``folder`` (which may not exist yet), or None.

    Walks up to the nearest existing ancestor: it must be a directory that is writable (access(2),
    which also reports read-only file systems). Creates nothing.
    """
    path = Path(folder).absolute()
    for ancestor in (path, *path.parents):
        if not os.path.lexists(ancestor):
            continue
        if not ancestor.is_dir():
            return f"{ancestor} is not a directory"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"{ancestor} is not writable" + (" (read-only file system)" if _read_only(ancestor) else "")
        return None
    return None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def report_unwritable(key: str, folder: str, reason: str) -> None:
    """Print the one-paragraph error for an output folder that cannot be written, and exit 4."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]kdexp: cannot write output:[/] {escape(key)}={escape(repr(str(folder)))}: "
        f"{escape(reason)}; choose a writable folder with {escape(key)}=... (or paths.log_dir=...)"
    )
    sys.exit(4)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency; keep this module importable
    _HydraCallback = object  # type: ignore[assignment,misc]


class OutputDirCheck(_HydraCallback):  # type: ignore[misc,valid-type]
    """Before Hydra creates the run (or sweep) folder: fail with a clear message if it cannot."""

    def _check(self, config: Any, key: str) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        HydraConfig.instance().set_config(config)  # what run_job does next; lets ${hydra:...} resolve
        folder = OmegaConf.select(config, key)
        reason = unwritable_reason(folder) if folder else None
        if reason:
            report_unwritable(key, str(folder), reason)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` says a file could not be written (permissions, read-only, disk full)."""
    return isinstance(err, OSError) and err.errno in WRITE_ERRNOS
