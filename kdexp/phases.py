"""Where a run's wall time goes: start-up, data, teacher, training, evaluation, profiling, writing.

Each phase's seconds accumulate in this process (a chain's links add up) and land in results.json
as ``run.phases_s``; ``scripts/bench.py --whole-run`` prints them as a table. Start-up is the
process's age when the run's own work begins (the interpreter, imports, config composition),
read from the kernel, so it counts what happened before any kdexp code ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

ORDER = ("start-up", "data", "teacher", "training", "evaluation", "profiling", "writing")

_seconds: dict[str, float] = {}
_started_once = False  # a sweep's later jobs in the same process had no start-up of their own


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat), else None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time, ticks after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def begin_run() -> None:
    """The run's own work starts now: forget earlier runs in this process (a sweep's jobs) and
    count the process's age so far as start-up (only for the process's first run)."""
    global _started_once
    _seconds.clear()
    age = process_age()
    if not _started_once and age is not None:
        _seconds["start-up"] = age
    _started_once = True


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to phase ``name``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - started


def seconds() -> dict[str, float]:
    """The phases so far, in :data:`ORDER` (others after), rounded to 10 ms."""
    names = [n for n in ORDER if n in _seconds] + [n for n in _seconds if n not in ORDER]
    return {name: round(_seconds[name], 2) for name in names}
