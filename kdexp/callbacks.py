"""Callbacks that keep a run reproducible and its outputs safe.

Lightning callbacks (configs/callbacks/default.yaml):

- :class:`EpochLogLines` prints one plain line per epoch when stdout is not a terminal.
- :class:`FiniteLossGuard` stops training at the first non-finite loss, *before* its backward pass
  and optimizer step, and refuses to write a checkpoint of non-finite weights, so ``last.ckpt``
  always holds the last good epoch.

(Exact resume — the same data order, augmentation and dropout after a restart — comes from the
training sampler, :class:`kdexp.data.base.EpochShuffle`.)

Hydra callback (configs/hydra/default.yaml):

- :class:`OutputDirCheck` checks that the run (or sweep) folder can be created and written before
  Hydra creates it, and stops with a one-line error naming the path instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from kdexp.threads import rebalance

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


class ShareCores(pl.Callback):
    """Every few seconds of training or evaluation, divide the cores anew among the kdexp runs
    alive on the machine (``runtime.threads=auto``; kdexp.threads.rebalance)."""

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        rebalance()

    def on_validation_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        rebalance()

    def on_test_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        rebalance()


class EpochLogLines(pl.Callback):
    """One plain line per epoch when stdout is not a terminal (pipes, ``nohup``, cluster logs),
    where the progress bar shows nothing: epoch, mean train loss, validation accuracy, elapsed
    time and an ETA (elapsed / epochs done here × epochs left). Logged to ``kdexp``, which Hydra
    sends to stdout and the run's ``train.log``.

    ``when``: ``auto`` (only when stdout is not a terminal), ``always`` or ``never``.
    """

    def __init__(self, when: str = "auto", label: str = "") -> None:
        if when not in ("auto", "always", "never"):
            raise ValueError(f"callbacks.epoch_log_lines.when={when!r} is not one of: auto, always, never")
        self.when, self.label = when, label  # label: e.g. "teacher cnn_large" for a teacher's epochs
        self._started = 0.0
        self._first_epoch = 0
        self._loss_sum: torch.Tensor | float = 0.0
        self._steps = 0

    def active(self) -> bool:
        return self.when == "always" or (self.when == "auto" and not sys.stdout.isatty())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        self._started, self._first_epoch = time.monotonic(), trainer.current_epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._steps = 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss):
            self._loss_sum = self._loss_sum + loss.detach()  # summed on the device: no sync per step
            self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active() or not trainer.is_global_zero or trainer.sanity_checking:
            return
        import logging
        import time

        done = trainer.current_epoch + 1
        elapsed = time.monotonic() - self._started
        per_epoch = elapsed / max(1, done - self._first_epoch)
        left = max(0, (trainer.max_epochs or done) - done) if (trainer.max_epochs or -1) > 0 else None
        parts = [f"{self.label}{' ' if self.label else ''}epoch {done}/{trainer.max_epochs}"]
        if self._steps:
            parts.append(f"train/loss {float(self._loss_sum) / self._steps:.4f}")
        val = trainer.callback_metrics.get("val/acc")
        if val is not None:
            parts.append(f"val/acc {100 * float(val):.2f}%")
        parts.append(f"elapsed {_clock(elapsed)}")
        if left is not None:
            parts.append(f"ETA {_clock(per_epoch * left)}")
        logging.getLogger("kdexp").info("  ".join(parts))


def _clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


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
    from kdexp.errors import OutputError, exit_with

    exit_with(OutputError(f"{key}={str(folder)!r}: {reason}; choose a writable folder with {key}=... (or paths.log_dir=...)"))


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
