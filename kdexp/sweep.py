"""Hydra multirun support: refuse launch set-ups that cannot work, stop a parallel sweep cleanly on
a signal, and report a sweep when it ends.

Lightning's ``ddp`` strategy runs several processes by re-launching the command line once per
extra local rank. Under Hydra's basic launcher that command is the whole sweep, so every rank would
run every job. Supported instead: one device per job, ``trainer.strategy=ddp_spawn`` (processes
spawned inside the job), or a cluster launcher (``hydra/launcher=submitit_slurm``) whose jobs are
started once per rank by the cluster.

A sweep whose jobs run in worker processes of this machine (``hydra/launcher=joblib``) is stopped
by the process that launched it (:class:`SweepStop`): on SIGTERM or SIGINT it passes the signal to
the workers running a job (each registers in a stop folder while its job runs), waits until each
has recorded its job as interrupted, says once how to resume, and exits 143 / 130; the workers,
which take no further job once the sweep stops (:func:`sweep_job`), end with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kdexp.tools.config import SWEPT_ENV, swept_keys
from kdexp.tools.files import write_atomic

log = logging.getLogger("kdexp")

SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # processes started inside the job
# The swept keys, noted by the launching process for jobs that run elsewhere with another argv.
# A parallel sweep's stop folder, "<launching process id>:<folder>", inherited by its workers.
STOP_ENV = "KDEXP_SWEEP_STOP"
WORKER_LAUNCHERS = ("JoblibLauncher",)  # jobs in worker processes of this machine that this one waits for
STOP_WAIT_S = 120.0  # how long the launching process waits for its jobs to record an interruption
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _count(devices: Any) -> int:
    """How many devices ``trainer.devices`` asks for; -1 and "auto" count as several."""
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:  # "0,1": a list of device ids
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices) if devices.lstrip("-").isdigit() else -1
    if isinstance(devices, int):
        return 2 if devices == -1 else devices
    return len(devices)  # a list of device ids


def relaunches(trainer: DictConfig | dict) -> bool:
    """Whether Lightning would start this trainer's extra ranks by re-running the command line."""
    strategy = str(trainer.get("strategy", "auto"))
    processes = _count(trainer.get("devices", 1)) * int(trainer.get("num_nodes", 1) or 1)
    return processes > 1 and not strategy.startswith(SPAWNING)


def check_sweep(cfg: DictConfig, launcher_target: str) -> None:
    """Raise ValueError if this multirun job's trainer would re-launch the whole sweep per rank
    (Hydra's basic launcher runs every job in this one process)."""
    if launcher_target.endswith("BasicLauncher") and relaunches(cfg.trainer):
        raise ValueError(
            f"trainer.strategy={cfg.trainer.get('strategy')!r} with trainer.devices="
            f"{cfg.trainer.get('devices')!r}, trainer.num_nodes={cfg.trainer.get('num_nodes', 1)!r} "
            "cannot run under `kdexp -m`: Lightning would re-launch the whole sweep once per rank. "
            "Use one device per job (trainer.devices=1), trainer.strategy=ddp_spawn on one machine, "
            "or a cluster launcher (hydra/launcher=submitit_slurm); see docs/scaling.md."
        )


def sweep_resume_command(sweep_dir: str, argv: list[str] | None = None) -> str:
    """The command that continues an interrupted sweep, ready to paste into a shell: the same
    overrides in the same sweep folder, each job resuming from its own last checkpoint (finished
    ones are only tested again)."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith(("hydra.sweep.dir=", "auto_resume="))]
    return shlex.join(["kdexp", *args, f"hydra.sweep.dir={sweep_dir}", "auto_resume=always"])


def sweep_interrupted_message(signal_name: str, sweep_dir: str, argv: list[str] | None = None) -> str:
    """What an interrupted sweep says, once: what happened to its jobs and how to resume it."""
    return (
        f"the sweep received {signal_name}: its running jobs are recorded as interrupted with their checkpoints "
        "kept, and no further job starts. Resume the sweep with:\n  " + sweep_resume_command(sweep_dir, argv)
    )


def _stop_env() -> tuple[int, Path] | None:
    pid, _, folder = os.environ.get(STOP_ENV, "").partition(":")
    return (int(pid), Path(folder)) if pid.isdigit() and folder else None


_RUN_STOPPED: list[str] = []  # a signal this worker's run already handled (kdexp.runner.signals)


def note_run_stopped(signal_name: str) -> None:
    """The run in this worker took a signal: a later one (the launcher passes it on, a terminal's
    Ctrl-C reaches the worker too) must not cut short the record the run is writing."""
    _RUN_STOPPED.append(signal_name)


def in_sweep_worker() -> bool:
    """Whether this process is a worker of a parallel sweep (its launching process owns the signals)."""
    env = _stop_env()
    return env is not None and env[0] != os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) has ended
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


class SweepStop:
    """In the process that launched a parallel sweep: SIGTERM or SIGINT stops every running job
    (the signal is passed on to the workers that registered a job), waits until each has recorded
    its job as interrupted (at most ``STOP_WAIT_S``; a second signal stops at once), says once how
    to resume, and exits 143 / 130. Leaving by SystemExit, the launcher ends its workers."""

    def __init__(self, sweep_dir: str, argv: list[str] | None = None) -> None:
        self.sweep_dir, self.argv = sweep_dir, list(sys.argv[1:] if argv is None else argv)
        self.folder = Path(tempfile.mkdtemp(prefix="kdexp-sweep-"))
        self.received: str | None = None
        os.environ[STOP_ENV] = f"{os.getpid()}:{self.folder}"  # inherited by the workers started later
        self.previous = {sig: signal.signal(sig, self.on_signal) for sig in SIGNALS}

    def running(self) -> list[int]:
        """The workers whose job has not yet finished (or recorded its interruption)."""
        pids = [int(p.stem) for p in self.folder.glob("*.running") if p.stem.isdigit()]
        return [pid for pid in pids if _alive(pid)]

    def on_signal(self, signum: int, frame: Any) -> None:
        from kdexp.errors import RunInterrupted, exit_with

        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            write_atomic(self.folder / "stop", name)  # before passing it on: no worker starts a job after
            for pid in self.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + STOP_WAIT_S
            while self.running() and time.monotonic() < deadline:  # a second signal ends this wait
                time.sleep(0.1)
        late = self.running()
        for pid in late:  # past the wait, or a second signal: no clean stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        message = sweep_interrupted_message(self.received, self.sweep_dir, self.argv)
        if late:
            message += f"\n(worker process(es) {', '.join(map(str, late))} were killed before recording their job)"
        self.close()
        exit_with(RunInterrupted(message, self.received))

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if os.environ.get(STOP_ENV, "").endswith(f":{self.folder}"):
            del os.environ[STOP_ENV]
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def sweep_job(grace_s: float = 5.0) -> Iterator[None]:
    """Around a job in a worker of a parallel sweep: register it (the launching process passes a
    signal on to registered jobs and waits for them), turn a signal that arrives outside the run's
    own handling into RunInterrupted, and once the sweep stops, take no further job: the worker
    waits to be ended by its launcher (or ends when the launcher is gone). Elsewhere: nothing."""
    from kdexp.errors import RunInterrupted

    env = _stop_env()
    if env is None or env[0] == os.getpid():
        yield
        return
    launcher, folder = env
    received: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        if received or _RUN_STOPPED:  # the first one is being handled (here, or by the run)
            return
        received.append(signal.Signals(signum).name)
        raise RunInterrupted(
            f"received {received[0]} before the run started; nothing of this run is recorded as finished",
            received[0],
        )

    if (folder / "stop").exists():
        _wait_for_the_end(launcher)
    mark = folder / f"{os.getpid()}.running"
    write_atomic(mark, "")
    previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        yield
    except RunInterrupted:  # after the run had finished: its record stands
        pass
    finally:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        mark.unlink(missing_ok=True)
        deadline = time.monotonic() + (grace_s if received else 0.0)  # the launcher's stop follows a signal
        while not (folder / "stop").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if (folder / "stop").exists():
            _wait_for_the_end(launcher)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_for_the_end(launcher: int) -> None:
    """A worker of a stopping sweep: start no further job; end when the launching process does."""
    while os.getppid() == launcher and _alive(launcher):
        time.sleep(0.2)
    os._exit(0)


class SweepReport(Callback):
    """At the start of a sweep: check the launch set-up (and, for a parallel sweep, stop it cleanly
    on a signal). At its end: write and print the report."""

    stop: SweepStop | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEPT_ENV] = ",".join(sorted(swept_keys()))  # inherited by cluster jobs
        target = str(config.hydra.launcher.get("_target_", ""))
        try:
            check_sweep(config, target)
        except ValueError as err:
            from kdexp.errors import SetupError, exit_with

            exit_with(SetupError(str(err)))
        if target.endswith(WORKER_LAUNCHERS):
            self.stop = SweepStop(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.stop is not None:
            self.stop.close()
            self.stop = None
        from kdexp.report import find_runs, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = find_runs([sweep_dir])
        if runs:
            write_report([sweep_dir])
        from kdexp.errors import exit_status

        failures = [r for r in runs if r.get("run", {}).get("status") == "failed"]
        if failures:
            log.error("%d of %d jobs failed (listed above); the others' results are kept", len(failures), len(runs))
            exit_status(1)

