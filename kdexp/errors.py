"""The errors a run stops with, and the one place that prints them and chooses the exit status.

Every ``KdexpError`` ends the process the same way: one paragraph on stderr
(``kdexp: <kind>: <message>``), no traceback unless ``HYDRA_FULL_ERROR=1``, and its exit status.
Light to import (Rich is loaded only when a message is printed): Hydra callbacks use it too.
"""

from __future__ import annotations

import os
import sys
import traceback


class KdexpError(Exception):
    """A run that stops with a one-paragraph message (no traceback) and a non-zero exit status."""

    kind = "error"
    exit_code = 1


class SetupError(KdexpError):
    """A bad input found before training started; its message names the key and what is allowed."""

    kind = "configuration error"
    exit_code = 2


class TrainingFailed(KdexpError):
    """Training diverged (a NaN or infinite loss); the last good checkpoint is kept."""

    kind = "training failed"
    exit_code = 3


class OutputError(KdexpError):
    """A file of the run could not be written (permissions, read-only or full file system)."""

    kind = "cannot write output"
    exit_code = 4


class RunInterrupted(KdexpError):
    """The run received SIGTERM (exit 143) or SIGINT/Ctrl-C (exit 130); checkpoints are kept."""

    kind = "interrupted"
    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = 130 if signal_name == "SIGINT" else 143  # 128 + the signal's number


def print_error(err: KdexpError) -> None:
    """``kdexp: <kind>: <message>`` on stderr (the traceback too under ``HYDRA_FULL_ERROR=1``)."""
    from rich.console import Console
    from rich.markup import escape

    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's switch for the full stack trace
        traceback.print_exception(err, file=sys.stderr)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]kdexp: {err.kind}:[/] {escape(str(err))}")


def exit_with(err: KdexpError) -> None:
    """Print ``err`` and end the process with its exit status."""
    print_error(err)
    sys.exit(err.exit_code)
