"""The one Trainer factory: every Trainer kdexp makes, the student's and a teacher's alike, trains
under the same NaN guard and writes checkpoints through the atomic writer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from kdexp.callbacks import FiniteLossGuard, ShareCores
from kdexp.tools.files import save_torch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through kdexp's atomic writer: a full disk leaves the previous
    checkpoint (or none), never a truncated file, and the error names the checkpoint, not a temp file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_torch(path, checkpoint)


def build_trainer(trainer_kwargs: dict[str, Any], callbacks: list[pl.Callback], logger: Any) -> pl.Trainer:
    """Every Trainer kdexp makes: the given settings and callbacks, plus the NaN guard (stop at the
    first non-finite loss, never checkpoint NaN weights) and the atomic checkpoint writer. No model
    summary unless asked for; with stdout not a terminal, no progress bar (one line per epoch
    instead, kdexp.callbacks.EpochLogLines)."""
    if not any(isinstance(c, FiniteLossGuard) for c in callbacks):
        callbacks = [*callbacks, FiniteLossGuard()]
    callbacks = [*callbacks, ShareCores()]  # runtime.threads=auto: a fair share as runs come and go
    trainer_kwargs = {"enable_model_summary": False, **trainer_kwargs}  # callbacks=model_summary prints one
    if not sys.stdout.isatty():  # piped: EpochLogLines' plain lines, not a progress bar's last frames
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
        trainer_kwargs["enable_progress_bar"] = False
    return pl.Trainer(**trainer_kwargs, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
