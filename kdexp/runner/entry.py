"""What the ``kdexp`` command does with a composed config: check it, run it, record a failure,
stop a sweep on a signal, and return the sweeper's value. Light to import (no torch, no
Lightning): those load only when a run starts, so ``kdexp --help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kdexp.checks import check_loggers
from kdexp.console import ascii_safe_streams, quiet_library_noise, show_config
from kdexp.errors import KdexpError, RunInterrupted, SetupError, exit_with, print_error
from kdexp.sweep import check_sweep, in_sweep_worker, sweep_job, sweep_resume_command

log = logging.getLogger("kdexp")
DEFAULT_METRIC = "student.val_acc_top1"


def check_job(cfg: DictConfig) -> None:
    """Checks of the job itself, before the run's own: the sweep's launcher, the loggers' packages,
    optimized_metric's form."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        try:
            check_sweep(cfg, str(hydra_cfg.launcher.get("_target_", "")))
        except ValueError as err:
            raise SetupError(str(err)) from err
    try:
        check_loggers(cfg.get("logger"))  # an extra's package: before any teacher trains
    except ValueError as err:
        raise SetupError(str(err)) from None
    if "." not in str(cfg.get("optimized_metric", DEFAULT_METRIC)):
        raise SetupError(
            f"optimized_metric={cfg.optimized_metric!r} must name a results.json number as "
            "<section>.<field>, e.g. student.val_acc_top1 (the default) or comparison.speedup_latency_b1"
        )


def optimized_value(results: dict[str, Any], key: str) -> float:
    """The number ``key`` (``<section>.<field>``, e.g. ``student.val_acc_top1``) names in a
    finished run's results: what a sweeper optimises. A clear error if there is no such number."""
    section, _, field = key.partition(".")
    value = (results.get(section) or {}).get(field) if isinstance(results.get(section), dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        available = [
            f"{name}.{f}" for name, part in results.items() if isinstance(part, dict)
            for f, v in part.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        raise SetupError(
            f"optimized_metric={key!r} is not a number in this run's results.json; "
            f"choose one of: {', '.join(available)}"
        )
    return float(value)


def sweep_resume_hint() -> str:
    """How to continue an interrupted sweep, ready to paste (kdexp.sweep.sweep_resume_command)."""
    return sweep_resume_command(HydraConfig.get().sweep.dir)


def stop_sweep(cfg: DictConfig, err: RunInterrupted) -> None:
    """An interrupted sweep job. In the process that runs the sweep's jobs (Hydra's basic launcher):
    say so with how to resume the whole sweep, and exit, starting no further job. In a worker of a
    parallel sweep, the launching process stops the sweep and says how to resume it, once: the job
    only says that it is recorded as interrupted (its caller returns; kdexp.sweep.sweep_job waits)."""
    job = HydraConfig.get().job.num
    said = (
        f"sweep job {job} ({cfg.paths.output_dir}) received {err.signal_name}; it is recorded as "
        "interrupted with its checkpoints kept"
    )
    if in_sweep_worker():
        print_error(RunInterrupted(said, err.signal_name))
        return
    exit_with(
        RunInterrupted(said + ", and no further job starts. Resume the sweep with:\n  " + sweep_resume_hint(), err.signal_name)
    )


def failed(cfg: DictConfig, err: BaseException, multirun: bool) -> float:
    """A run that stopped: record it; a single run exits with the error's code, a sweep job
    returns NaN so the other jobs go on (a signal stops the whole sweep)."""
    from kdexp.runner.folder import record_run_failure

    record_run_failure(cfg, err)
    if not isinstance(err, KdexpError):
        if not multirun:
            raise err
        log.exception("job failed: %s", err)
        return float("nan")
    if multirun and isinstance(err, RunInterrupted):  # schedulers, `timeout`, `docker stop`
        stop_sweep(cfg, err)
        return float("nan")
    if not multirun:
        exit_with(err)
    print_error(err)
    return float("nan")


def run_checked(cfg: DictConfig) -> dict[str, Any]:
    """The job's checks, then the run: what ``kdexp`` and the Python API's ``kdexp.run`` both do.
    Errors propagate (KdexpErrors with their exit codes); recording them is the caller's."""
    from kdexp.runner.experiment import run_experiment
    from kdexp.threads import resolve_threads, sharing_cores

    check_job(cfg)
    value = OmegaConf.select(cfg, "runtime.threads", default="auto")
    try:
        resolve_threads(value)
    except ValueError as err:
        raise SetupError(str(err)) from None
    fixed = bool(OmegaConf.select(cfg, "trainer.deterministic", default=False))  # bit-exact: never re-divided
    with sharing_cores(value, launcher_cfg(), fixed=fixed):  # the cores divided among the live runs
        return run_experiment(cfg)


def launcher_cfg() -> dict[str, Any]:
    """The Hydra launcher's settings (``n_jobs`` of a parallel one), or {} outside a Hydra job."""
    try:
        return OmegaConf.to_container(HydraConfig.get().launcher, resolve=True) or {}
    except ValueError:  # the Python API outside Hydra's own run
        return {}


def run_job(cfg: DictConfig) -> float | None:
    """Run; return ``optimized_metric`` from the results (what a sweeper such as Optuna
    maximises; by default the student's final validation accuracy, never the test set)."""
    quiet_library_noise()
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    from kdexp.distributed import env_is_global_zero  # torch: the run imports it anyway

    if env_is_global_zero():  # what this run is, on the console and at the top of train.log (once)
        show_config(cfg)
    with sweep_job():  # a worker of a parallel sweep: it stops with the sweep
        try:
            results = run_checked(cfg)
        except Exception as err:  # KdexpError: 2 bad input, 3 NaN, 4 unwritable, 130 SIGINT, 143 SIGTERM
            return failed(cfg, err, multirun)
        if not results:  # DDP ranks other than 0 do not report
            return None
        try:
            return optimized_value(results, cfg.get("optimized_metric", DEFAULT_METRIC))
        except SetupError as err:  # the results are written; only the sweeper's value is missing
            if not multirun:
                exit_with(err)
            print_error(err)
            return float("nan")
    return None  # a signal after the run had finished: its record stands (sweep_job)
