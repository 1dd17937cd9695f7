"""How many CPU threads a run uses (``runtime.threads``), set before any work.

Every torch process uses all the cores by default, so two runs at once on one machine thrash:
on 2 cores, two runs started together took 135 s where one after the other took 74 s. ``auto``
divides the cores among the jobs that run at once — a Hydra parallel launcher's ``n_jobs`` — and
respects an ``OMP_NUM_THREADS`` the user set. A run that finds the machine already busy says so.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("kdexp")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a cgroup or taskset limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: dict[str, Any] | None) -> int:
    """Jobs a Hydra launcher runs at once: ``n_jobs`` of the joblib launcher, else 1.
    (joblib's ``n_jobs=-1`` means one job per core.)"""
    n_jobs = int((launcher or {}).get("n_jobs") or 1)
    return available_cores() if n_jobs < 0 else max(n_jobs, 1)


def resolve_threads(value: Any, launcher: dict[str, Any] | None = None) -> int:
    """``runtime.threads``: a positive integer, or ``auto`` (``OMP_NUM_THREADS`` if the user set
    it, else the available cores divided by the jobs running at once, at least 1)."""
    if value in (None, "auto"):
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if omp.isdigit() and int(omp) > 0:
            return int(omp)
        return max(1, available_cores() // parallel_jobs(launcher))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"runtime.threads must be auto or an integer >= 1 (the CPU threads this run uses; "
            f"{available_cores()} cores here), got {value!r}"
        )
    return value


def busy_machine_note(threads: int) -> str | None:
    """A note when other work already keeps the cores busy (1-minute load average), else None."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = available_cores()
    if load < cores - 0.5:
        return None
    return (
        f"the machine is busy (load average {load:.1f} on {cores} cores) and this run uses {threads} "
        f"thread(s): it will be slower and its timings noisier. N runs at once share the cores best "
        f"with runtime.threads={max(1, cores // 2)} each for 2 runs (cores / N), or Hydra's joblib "
        "launcher (hydra/launcher=joblib hydra.launcher.n_jobs=N), which divides them itself"
    )


def apply_threads(value: Any, launcher: dict[str, Any] | None = None) -> int:
    """Set torch's intra-op threads for this process; return the number set."""
    import torch

    threads = resolve_threads(value, launcher)
    torch.set_num_threads(threads)
    note = busy_machine_note(threads)
    if note:
        log.warning("%s", note)
    return threads
