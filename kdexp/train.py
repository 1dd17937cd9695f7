"""``kdexp``: the Hydra entry point. Compose the config, run it, report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kdexp.sweep import check_sweep, job_dirname, job_name

# torch and Lightning (through kdexp.pipeline) are imported only when a run starts, so that
# `kdexp --help`, `kdexp --cfg job` and tab completion answer in about a second.

log = logging.getLogger("kdexp")
OmegaConf.register_new_resolver("kdexp_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("kdexp_jobname", job_name, replace=True)


def _slurm_job_dir(fallback: str) -> str:
    from kdexp.distributed import slurm_job_dir  # imports torch: only when a run folder is named

    return slurm_job_dir(fallback)


if not OmegaConf.has_resolver("kdexp.slurm_job_dir"):  # configs/hydra names run folders with it
    OmegaConf.register_new_resolver("kdexp.slurm_job_dir", _slurm_job_dir, use_cache=True)

# The repository's configs/ folder (an absolute path: Hydra would read "../configs" as a module).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def quiet_library_noise() -> None:
    """Drop messages that are advertising or internal deprecations, not about the user's run."""
    warnings.filterwarnings("ignore", message=".*treespec.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡")
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the experiment ``cfg`` describes; returns the results (also in results.json)."""
    from kdexp.pipeline import SetupError, reported_errors, run_single

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        try:
            check_sweep(cfg, str(hydra_cfg.launcher.get("_target_", "")))
        except ValueError as err:
            raise SetupError(str(err)) from err
    with reported_errors():  # write errors and SIGTERM: clear messages, not tracebacks
        if cfg.method.name == "born_again":
            from kdexp.chain import run_chain  # resolves one config per generation itself

            return run_chain(cfg)
        OmegaConf.resolve(cfg)
        return run_single(cfg)


@contextmanager
def noting_ctrl_c() -> Iterator[dict[str, bool]]:
    """Note a Ctrl-C (SIGINT) while the block runs; it still raises KeyboardInterrupt as usual.

    Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)``; the note tells that
    exit apart from others, so the run can be recorded as interrupted and exit 130."""
    noted = {"ctrl_c": False}

    def handler(signum: int, frame: Any) -> None:
        noted["ctrl_c"] = True
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield noted
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def sweep_resume_hint(cfg: DictConfig) -> str:
    """How to continue an interrupted sweep: the same command in the same sweep folder, each job
    resuming from its own last checkpoint (finished ones are only tested again)."""
    sweep_dir = HydraConfig.get().sweep.dir
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "auto_resume="))]
    return f"kdexp {' '.join(args)} hydra.sweep.dir={sweep_dir} auto_resume=always"


def stop_sweep(cfg: DictConfig, reason: str, exit_code: int) -> None:
    """An interrupted sweep job: say so with how to resume the whole sweep, start no further job."""
    from rich.console import Console
    from rich.markup import escape

    job = HydraConfig.get().job.num
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]kdexp: interrupted:[/] sweep job {job} ({escape(str(cfg.paths.output_dir))}) {escape(reason)}; "
        f"it is recorded as interrupted with its checkpoints kept, and no further job starts. "
        f"Resume the sweep with:\n  {escape(sweep_resume_hint(cfg))}"
    )
    sys.exit(exit_code)


def record_failure(cfg: DictConfig, err: BaseException, status: str = "failed") -> None:
    """Mark the run failed (or interrupted) in its results.json, so sweeps and reports show it."""
    from kdexp.results import write_failure

    try:
        run_info = {
            "method": cfg.method.name,
            "data": cfg.data.name,
            "teacher": cfg.teacher.name,
            "student": cfg.student.name,
            "seed": cfg.seed,
            "output_dir": cfg.paths.output_dir,
            "overrides": list(HydraConfig.get().overrides.task),
        }
        write_failure(cfg.paths.output_dir, run_info, err, status=status)
    except Exception:  # noqa: BLE001 - recording must never hide the original error
        log.debug("could not record the failure", exc_info=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return the student's final validation accuracy (what a sweeper such as Optuna
    maximises: never the test set). A failed sweep job is recorded and returns NaN, so the
    other jobs go on; a failed single run exits non-zero."""
    from rich.console import Console
    from rich.markup import escape

    from kdexp.pipeline import KdexpError, RunInterrupted

    quiet_library_noise()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    noted = {"ctrl_c": False}
    try:
        with noting_ctrl_c() as noted:
            results = run(cfg)
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not noted["ctrl_c"]:
            raise
        record_failure(cfg, KeyboardInterrupt("Ctrl-C (SIGINT)"), status="interrupted")
        if multirun:
            stop_sweep(cfg, "stopped by Ctrl-C", 130)
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]kdexp: interrupted:[/] stopped by Ctrl-C; checkpoints kept. Resume with ckpt_path=last "
            f"hydra.run.dir={escape(str(cfg.paths.output_dir))} (and the same overrides)"
        )
        sys.exit(130)
    except KdexpError as err:  # bad input (exit 2), NaN loss (3), unwritable output (4), SIGTERM (143)
        interrupted = isinstance(err, RunInterrupted)
        record_failure(cfg, err, status="interrupted" if interrupted else "failed")
        if interrupted and multirun:  # schedulers, `timeout`, `docker stop`: the whole sweep stops
            stop_sweep(cfg, str(err).split(". Resume with")[0].split(" (the last:")[0], err.exit_code)
        console = Console(stderr=True, soft_wrap=True)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's switch for the full stack trace
            traceback.print_exception(err, file=sys.stderr)
        console.print(f"[bold red]kdexp: {err.kind}:[/] {escape(str(err))}")
        if not multirun:
            sys.exit(err.exit_code)
        return float("nan")
    except Exception as err:
        record_failure(cfg, err)
        if not multirun:
            raise
        log.exception("job failed: %s", err)
        return float("nan")
    student = (results or {}).get("student", {})
    return student.get("val_acc_top1", student.get("acc_top1"))


if __name__ == "__main__":
    main()
