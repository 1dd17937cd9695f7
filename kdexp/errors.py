"""The errors a run stops with, and the one place that prints them and chooses the exit status.

Every ``KdexpError`` ends each of the four commands (``kdexp``, ``kdexp-report``, ``kdexp-eval``,
``kdexp-export``) the same way: one paragraph on stderr (``<prog>: <kind>: <message>``), no
traceback unless ``HYDRA_FULL_ERROR=1``, and its exit status (the table in docs/architecture.md).
Bad input that a library raised (ValueError, FileNotFoundError, ...) is a configuration error.
Light to import (Rich is loaded only when a message is printed): Hydra callbacks use it too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn


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


def as_kdexp_error(err: BaseException) -> KdexpError | None:
    """``err`` as the commands report it: a KdexpError as it is; bad input that a library or a
    check raised (ValueError, FileNotFoundError, KeyError, ImportError, Hydra's errors) as a
    SetupError (exit 2); anything else None: a bug, shown with its traceback."""
    if isinstance(err, KdexpError):
        return err
    from hydra.errors import HydraException

    if isinstance(err, (ValueError, FileNotFoundError, KeyError, ImportError, HydraException)):
        converted = SetupError(str(err))
        converted.__cause__ = err
        return converted
    return None


def format_error(err: BaseException, prog: str = "kdexp") -> str:
    """``<prog>: <kind>: <message>``, the one line (or paragraph) a command ends with."""
    error = as_kdexp_error(err) or err
    kind = getattr(error, "kind", type(err).__name__)
    return f"{prog}: {kind}: {error}"


def print_error(err: BaseException, prog: str = "kdexp") -> None:
    """``<prog>: <kind>: <message>`` on stderr (the traceback too under ``HYDRA_FULL_ERROR=1``)."""
    from rich.console import Console
    from rich.markup import escape

    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's switch for the full stack trace
        traceback.print_exception(err, file=sys.stderr)
    error = as_kdexp_error(err) or err
    kind = getattr(error, "kind", type(err).__name__)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]{escape(prog)}: {escape(kind)}:[/] {escape(str(error))}")


def exit_status(code: int) -> NoReturn:
    """End the process with ``code``: the one ``sys.exit`` in kdexp (the exit-code table: docs/architecture.md)."""
    sys.exit(code)


def exit_with(err: BaseException, prog: str = "kdexp") -> NoReturn:
    """Print ``err`` and end the process with its exit status."""
    print_error(err, prog)
    exit_status(getattr(as_kdexp_error(err), "exit_code", 1))


def run_command(prog: str, entry: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
                help_text: str | None = None) -> int:
    """Run a command's ``entry(args)`` and return its exit status: 0, what it returns, or the
    error's (printed as ``<prog>: <kind>: <message>``, bad input exit 2). ``help_text``: printed
    for ``-h``/``--help``. A console script's wrapper exits with the returned status."""
    from kdexp.console import quiet_library_noise

    quiet_library_noise()
    args = list(sys.argv[1:] if argv is None else argv)
    if help_text is not None and {"-h", "--help"} & set(args):
        print(help_text)
        return 0
    try:
        return entry(args) or 0
    except Exception as err:  # noqa: BLE001 - reported in one paragraph; a bug keeps its traceback
        error = as_kdexp_error(err)
        if error is None:
            raise
        print_error(err, prog)
        return error.exit_code
