"""Signals and write errors around a whole run: SIGTERM and SIGINT stop it cleanly, a full or
read-only disk becomes one clear message."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import pytorch_lightning as pl

from kdexp.callbacks import is_write_error
from kdexp.errors import OutputError, RunInterrupted
from kdexp.sweep import in_sweep_worker, note_run_stopped


class Signals:
    """SIGINT (Ctrl-C) is handled like SIGTERM: during the student's ``fit`` it asks Lightning for
    the same clean stop; elsewhere it ends the run with RunInterrupted. A second Ctrl-C interrupts
    at once, except in a worker of a parallel sweep: there the launching process passes a signal
    on to its workers (and a terminal's Ctrl-C reaches them too), and it owns a second one."""

    received: str | None = None
    trainer: pl.Trainer | None = None  # the trainer whose fit a signal should stop cleanly

    @classmethod
    def on_signal(cls, signum: int, frame: Any) -> None:
        if cls.received is not None and in_sweep_worker():
            return  # the same stop, passed on by the sweep's launching process
        cls.received = signal.Signals(signum).name
        if in_sweep_worker():
            note_run_stopped(cls.received)
        if signum == signal.SIGINT and not in_sweep_worker():
            signal.signal(signum, signal.default_int_handler)
        if cls.trainer is not None:
            cls.trainer._signal_connector.received_sigterm = True  # Lightning's own SIGTERM flag
            return
        raise Interrupted(cls.received)


class Interrupted(BaseException):
    """Raised by the signal handler outside the student's fit (Lightning re-raises BaseExceptions)."""


@contextlib.contextmanager
def reported_errors() -> Any:
    """Around a whole run: "cannot write" OSErrors (EACCES, EROFS, ENOSPC, ...) become an
    OutputError naming the path; SIGTERM or SIGINT outside the student's training (e.g. while a
    teacher trains) becomes RunInterrupted instead of Lightning's silent exit or a traceback."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, Signals.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    Signals.received = None
    try:
        yield
    except (SIGTERMException, Interrupted, KeyboardInterrupt):
        name = Signals.received or "SIGINT"
        raise RunInterrupted(
            f"received {name} before the student's training finished; nothing of this run is recorded as "
            "finished. Rerun with the same settings (a teacher whose training finished is cached and reused)",
            name,
        ) from None
    except OSError as err:
        if not is_write_error(err):
            raise
        where = err.filename or "the run's output folder"
        raise OutputError(
            f"{where}: {err.strerror or err} (errno {err.errno}); free space or choose a writable "
            "folder (hydra.run.dir=..., paths.log_dir=...); files written before this one are kept"
        ) from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
