"""Hydra multirun support: refuse launch set-ups that cannot work, and report a sweep when it ends.

Lightning's ``ddp`` strategy runs several processes by re-launching the command line once per
extra local rank. Under Hydra's basic launcher that command is the whole sweep, so every rank would
run every job. Supported instead: one device per job, ``trainer.strategy=ddp_spawn`` (processes
spawned inside the job), or a cluster launcher (``hydra/launcher=submitit_slurm``) whose jobs are
started once per rank by the cluster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("kdexp")

SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # processes started inside the job
# The swept keys, noted by the launching process for jobs that run elsewhere with another argv.
SWEPT_ENV = "KDEXP_SWEPT_KEYS"
MAX_DIRNAME = 120  # characters of a job folder's name (file systems allow 255 bytes)


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name: its overrides (``method=kd,seed=1``), shortened with a hash
    when they are too long for a file name. Registered as the ``kdexp_dirname`` resolver."""
    overrides = overrides.replace("/", "_")
    if len(overrides) <= MAX_DIRNAME:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{overrides[: MAX_DIRNAME - 9]}~{digest}"


def swept_keys(argv: list[str] | None = None) -> set[str]:
    """The keys a ``kdexp -m`` command line sweeps (``method=vanilla,kd``, ``seed=range(3)``), read
    with Hydra's own override parser; empty when none (e.g. an Optuna search's own parameters)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - naming a folder must never stop a sweep; Hydra reports bad syntax
        return set()
    return {o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()}


def searched_keys(params: Any = None) -> set[str]:
    """The keys the sweeper's own ``hydra.sweeper.params`` sweep or search (an Optuna search's
    ``method.temperature: interval(1.0, 10.0)``); ``params`` None: the running job's Hydra config."""
    if params is None:
        from hydra.core.hydra_config import HydraConfig

        params = HydraConfig.get().sweeper.get("params") if HydraConfig.initialized() else None
    return swept_keys([f"{key}={value}" for key, value in (params or {}).items()])


def job_name(task_overrides: Any, argv: list[str] | None = None, params: Any = None) -> str:
    """A sweep job's folder (and TensorBoard run) name from the keys the sweep varies only:
    ``method=kd,seed=0``, or the values an Optuna trial searched (``hydra.sweeper.params``); the
    constant overrides stay in the job's ``.hydra/overrides.yaml`` and the report's caption. All
    overrides when nothing is swept. Registered as the ``kdexp_jobname`` resolver (its argument:
    ``${hydra.overrides.task}``); ``argv``, ``params``: the command line and the sweeper's params
    (default: this process's, and the job's Hydra config)."""
    items = [str(item) for item in task_overrides]
    noted = os.environ.get(SWEPT_ENV) if argv is None else None  # jobs on a cluster: see SweepReport
    swept = set(filter(None, noted.split(","))) if noted is not None else swept_keys(argv)
    swept |= searched_keys(params) if params is not None or argv is None else set()
    chosen = [i for i in items if i.split("=", 1)[0].lstrip("+~") in swept] if swept else items
    return job_dirname(",".join(sorted(chosen or items)))


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


class SweepReport(Callback):
    """At the start of a sweep: check the launch set-up. At its end: write and print the report."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEPT_ENV] = ",".join(sorted(swept_keys()))  # inherited by cluster jobs
        try:
            check_sweep(config, str(config.hydra.launcher.get("_target_", "")))
        except ValueError as err:
            from kdexp.errors import SetupError, exit_with

            exit_with(SetupError(str(err)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from kdexp.report import find_runs, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        runs = find_runs([sweep_dir])
        if runs:
            write_report([sweep_dir])
        failures = [r for r in runs if r.get("run", {}).get("status") == "failed"]
        if failures:
            log.error("%d of %d jobs failed (listed above); the others' results are kept", len(failures), len(runs))
            sys.exit(1)

