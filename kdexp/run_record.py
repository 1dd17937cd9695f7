"""What a run folder says about its run, and the one way every file of a run is written.

``results.json`` is the run's single record:

- a finished run: ``run.status: "complete"`` (and ``run.complete: true``) with all its numbers, and
  ``run.earlier_failures``: the failure records of earlier attempts it resumed from;
- a run that stopped: ``run.status: "failed"`` (``"interrupted"`` for SIGTERM/Ctrl-C) and ``run.failure`` = {kind, message, epoch, step,
  last_checkpoint, time} (``run.error`` repeats the message in one line, for reports).

A failure never replaces a finished record (an extension that fails leaves the finished results as
they were). Every file (results, weights, checkpoints, cache entries) is written by
:func:`kdexp.tools.files.write_atomic`: a temporary file in the same folder, fsync, rename, fsync of
the folder, so a crash or a full disk leaves the previous version or nothing, never a truncated file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kdexp.tools.files import write_json

RESULTS_FILE = "results.json"


def read_results(output_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's results.json, or None when it is missing or unreadable."""
    try:
        results = json.loads((Path(output_dir) / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def is_finished(output_dir: str | Path) -> bool:
    """Whether the run folder holds the results of a run that finished (the one place this is read)."""
    run = (read_results(output_dir) or {}).get("run", {})
    return isinstance(run, dict) and (run.get("status") == "complete" or run.get("complete") is True)


def failure_record(
    kind: str, message: str, epoch: int | None = None, step: int | None = None, last_checkpoint: str | None = None
) -> dict[str, Any]:
    """The ``run.failure`` block: what stopped the run, where, and what it can resume from."""
    return {
        "kind": kind,
        "message": message,
        "epoch": epoch,
        "step": step,
        "last_checkpoint": last_checkpoint,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def record_failure(output_dir: str | Path, run_info: dict[str, Any], failure: dict[str, Any]) -> Path | None:
    """Record a run that stopped in its results.json (``run.status: failed``, ``run.failure``).

    Never replaces a finished run's results; the failures of earlier attempts in this folder are
    kept in ``run.earlier_failures``. Never raises: recording must not hide the original error.
    """
    output_dir = Path(output_dir)
    if is_finished(output_dir):
        return None
    earlier = earlier_failures(output_dir)
    status = "interrupted" if failure["kind"] == "interrupted" else "failed"
    run = {**run_info, "status": status, "error": f"{failure['kind']}: {failure['message']}", "failure": failure}
    if earlier:
        run["earlier_failures"] = earlier
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        return write_json(output_dir / RESULTS_FILE, {"run": run})
    except OSError:  # e.g. a full or unwritable folder: the error itself is what the user sees
        return None


def earlier_failures(output_dir: str | Path) -> list[dict[str, Any]]:
    """The failure records a failed results.json in this folder holds (oldest first), else []."""
    run = (read_results(output_dir) or {}).get("run", {})
    if not isinstance(run, dict) or run.get("status") not in ("failed", "interrupted"):
        return []
    return [*run.get("earlier_failures", []), *([run["failure"]] if isinstance(run.get("failure"), dict) else [])]
