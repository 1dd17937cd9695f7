"""Test-only callback for the incremental runs of test_incremental.py (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class FailInStep(pl.Callback):
    """Raise when training starts in the sub-run folder named ``step`` (e.g. ``step2``)."""

    def __init__(self, step: str) -> None:
        self.step = step

    def on_train_start(self, trainer, pl_module) -> None:
        if Path(trainer.default_root_dir).name == self.step:
            raise RuntimeError(f"injected failure in {self.step}")
