"""Test-only pieces the CLI subprocesses of test_tuning.py load (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import glob
import time

import pytorch_lightning as pl


class WaitFor(pl.Callback):
    """At the start of training, wait (at most ``limit_s``) until a file matching ``pattern``
    exists: a sweep's first trial holds on until another process has started one of its own."""

    def __init__(self, pattern: str, limit_s: float = 120.0) -> None:
        self.pattern, self.limit_s = pattern, limit_s

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        deadline = time.monotonic() + self.limit_s
        while not glob.glob(self.pattern) and time.monotonic() < deadline:
            time.sleep(0.1)


class HoldOnceAnyFinished(pl.Callback):
    """At the start of training, if a run matching ``finished`` has finished, touch ``held`` and
    wait (at most ``limit_s``): a sweep's second trial hangs mid-trial, to be killed there."""

    def __init__(self, finished: str, held: str, limit_s: float = 120.0) -> None:
        self.finished, self.held, self.limit_s = finished, held, limit_s

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if glob.glob(self.finished):
            open(self.held, "w").close()
            time.sleep(self.limit_s)
