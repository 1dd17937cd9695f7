"""Test-only pieces the CLI subprocesses of test_reliability.py load (tests/ is on their PYTHONPATH).

``PauseMidEpoch`` is added with ``+callbacks.pause._target_=crash_helpers.PauseMidEpoch``: in the
middle of an epoch (after at least one end-of-epoch checkpoint exists) it writes a marker file and
waits, so the test can kill the process at a known point without racing the training.

``LAUNCHER`` runs the CLI with an audit hook that makes every file opened for writing under (or
whose path starts with) ``$KDEXP_TEST_FULL`` fail with ENOSPC, and every rename into it fail with EXDEV (as when temp files
live on another file system, so the move falls back to a copy that then hits the full disk): the
same OSErrors a full file system raises, for every writer (checkpoints, results.json, weights).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class PauseMidEpoch(pl.Callback):
    """After batch ``batch`` of epoch ``epoch``: touch ``marker``, then wait (at most ``limit_s``)
    until the process receives SIGTERM (Lightning's handler sets ``trainer.received_sigterm``)
    or is killed. Draws no random numbers, so the run is otherwise identical to one without it."""

    def __init__(self, marker: str, epoch: int = 1, batch: int = 1, limit_s: float = 120.0) -> None:
        self.marker, self.epoch, self.batch, self.limit_s = Path(marker), epoch, batch, limit_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.limit_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


LAUNCHER = r"""
import errno, os, sys

FULL = os.path.abspath(os.environ["KDEXP_TEST_FULL"])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def under_full(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False
    path = os.path.abspath(os.fsdecode(path))
    return path.startswith(FULL)  # a folder, or a file-name prefix such as <run>/.results.json.


def disk_full(event, args):
    if event == "open" and under_full(args[0]):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
        if writing:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.abspath(os.fsdecode(args[0])))
    if event == "os.rename" and under_full(args[1]):
        # A file written elsewhere (fsspec writes checkpoints to a temp file first) is on another
        # file system: the rename fails with EXDEV, and the copy that follows hits the full disk.
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), args[0], args[1])


sys.addaudithook(disk_full)
from kdexp.train import main

main()
"""
