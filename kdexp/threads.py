"""How many CPU threads a run uses (``runtime.threads``), set before any work and kept fair.

Every torch process uses all the cores by default, so two runs at once on one machine thrash:
on 2 cores, two runs started together took 135 s where one after the other took 74 s. ``auto``
divides the cores among the kdexp runs alive on the machine — a Hydra parallel launcher's jobs,
runs in other terminals — and keeps dividing them as runs start and finish (each live run holds
a file named by its process id in :data:`RUNS_DIR`; :func:`rebalance` is called every few seconds
by a callback on every Trainer). An ``OMP_NUM_THREADS`` the user set, or a number, is never
changed. A run that finds the machine busy with other work says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
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


RUNS_DIR = Path(tempfile.gettempdir()) / f"kdexp-runs-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, T = stopped, ...), "?" where /proc cannot say, None if it is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return "?"
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def live_runs(folder: Path | None = None) -> int:
    """The kdexp runs using the cores now (at least this one): files of runs that died are
    removed; a stopped run (Ctrl-Z, SIGSTOP) keeps its file but leaves its cores to the others."""
    folder = folder or RUNS_DIR
    count = 0
    for entry in folder.glob("*") if folder.is_dir() else []:
        state = _state(int(entry.name)) if entry.name.isdigit() else None
        if state is None:
            entry.unlink(missing_ok=True)  # a run killed before it could leave
        elif state not in ("T", "t", "Z"):
            count += 1
    return max(count, 1)


def user_omp_threads() -> int | None:
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else None


def resolve_threads(value: Any, launcher: dict[str, Any] | None = None, runs: int = 1) -> int:
    """``runtime.threads``: a positive integer, or ``auto`` (``OMP_NUM_THREADS`` if the user set
    it, else the available cores divided by the jobs running at once — the launcher's parallel
    jobs or the ``runs`` alive, whichever is more — at least 1)."""
    if value in (None, "auto"):
        if user_omp_threads():
            return user_omp_threads()  # type: ignore[return-value]
        return max(1, available_cores() // max(parallel_jobs(launcher), runs))
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


def apply_threads(value: Any, launcher: dict[str, Any] | None = None, runs: int = 1) -> int:
    """Set torch's intra-op threads for this process; return the number set."""
    import torch

    threads = resolve_threads(value, launcher, runs)
    torch.set_num_threads(threads)
    _Sharing.started = threads
    note = busy_machine_note(threads) if runs == 1 else None
    if note:
        log.warning("%s", note)
    return threads


class _Sharing:
    """This process's share of the cores, while ``auto`` is in force (``active``)."""

    active: bool = False
    started: int | None = None  # the threads this run started with (results.json run.threads)
    launcher: dict[str, Any] | None = None
    folder: Path = RUNS_DIR
    checked: float = 0.0


@contextlib.contextmanager
def sharing_cores(
    value: Any, launcher: dict[str, Any] | None = None, folder: Path | None = None, fixed: bool = False
) -> Iterator[int]:
    """Set this run's threads (``runtime.threads``) for the block; with ``auto`` (and no
    ``OMP_NUM_THREADS``) the run is counted among the live runs and the cores are divided among
    them, now and (through :func:`rebalance`) whenever runs start or finish. ``fixed`` (a
    ``trainer.deterministic`` run): the cores divided by the launcher's jobs only, never changed —
    a thread count that depends on other runs would change the last bits of multi-threaded sums,
    and a deterministic run must not depend on what else runs. Yields the threads."""
    try:
        if fixed:
            yield apply_threads(value, launcher)
        else:
            yield from _share(value, launcher, folder)
    finally:
        _Sharing.started = None  # the next run in this process says its own


def _share(value: Any, launcher: dict[str, Any] | None, folder: Path | None) -> Iterator[int]:
    if value not in (None, "auto") or user_omp_threads():
        yield apply_threads(value, launcher)
        return
    folder = folder or RUNS_DIR
    mine = folder / str(os.getpid())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mine.touch()
    except OSError:  # no shared temp folder: divide by the launcher's jobs only
        yield apply_threads(value, launcher)
        return
    _Sharing.active, _Sharing.launcher, _Sharing.folder = True, launcher, folder
    _Sharing.checked = time.monotonic()
    try:
        runs = live_runs(folder)
        threads = apply_threads(value, launcher, runs)
        if runs > 1:
            log.info("Sharing the %d cores with %d other kdexp run(s): %d thread(s) each", available_cores(), runs - 1, threads)
        yield threads
    finally:
        _Sharing.active = False
        mine.unlink(missing_ok=True)


def started_threads() -> int | None:
    """The threads the current run started with (a shared run's share may change later)."""
    return _Sharing.started


def rebalance(every_s: float = 2.0) -> int | None:
    """Under :func:`sharing_cores`, at most every ``every_s`` seconds: the cores divided among the
    runs alive now. Sets torch's threads and returns the new number when it changed, else None."""
    if not _Sharing.active or time.monotonic() - _Sharing.checked < every_s:
        return None
    import torch

    _Sharing.checked = time.monotonic()
    runs = live_runs(_Sharing.folder)
    threads = resolve_threads("auto", _Sharing.launcher, runs)
    if threads == torch.get_num_threads():
        return None
    torch.set_num_threads(threads)
    log.info("%d kdexp run(s) alive on %d cores: now %d thread(s)", runs, available_cores(), threads)
    return threads
