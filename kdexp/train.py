"""``kdexp``: the Hydra entry point. Compose the config, run it, report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kdexp.checks import with_override_hints
from kdexp.console import ascii_safe_streams
from kdexp.errors import KdexpError, RunInterrupted, SetupError, print_error
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
if not OmegaConf.has_resolver("kdexp.pid"):  # unique default run folders (same-second runs)
    OmegaConf.register_new_resolver("kdexp.pid", lambda: str(os.getpid()), use_cache=True)

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
    from kdexp.pipeline import reported_errors, run_single

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        try:
            check_sweep(cfg, str(hydra_cfg.launcher.get("_target_", "")))
        except ValueError as err:
            raise SetupError(str(err)) from err
    with reported_errors():  # write errors, SIGTERM and Ctrl-C: clear messages, not tracebacks
        from kdexp.methods import METHODS

        if getattr(METHODS.get(cfg.method.name), "chain_runner", False):  # born_again, takd
            from kdexp.chain import run_chain  # resolves one config per generation itself

            return run_chain(cfg)
        OmegaConf.resolve(cfg)
        return run_single(cfg)


def sweep_resume_hint() -> str:
    """How to continue an interrupted sweep: the same command in the same sweep folder, each job
    resuming from its own last checkpoint (finished ones are only tested again)."""
    sweep_dir = HydraConfig.get().sweep.dir
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "auto_resume="))]
    return f"kdexp {' '.join(args)} hydra.sweep.dir={sweep_dir} auto_resume=always"


def stop_sweep(cfg: DictConfig, err: RunInterrupted) -> None:
    """An interrupted sweep job: say so with how to resume the whole sweep, start no further job."""
    job = HydraConfig.get().job.num
    print_error(
        RunInterrupted(
            f"sweep job {job} ({cfg.paths.output_dir}) received {err.signal_name}; it is recorded as "
            "interrupted with its checkpoints kept, and no further job starts. Resume the sweep with:\n  "
            + sweep_resume_hint(),
            err.signal_name,
        )
    )
    sys.exit(err.exit_code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return the student's final validation accuracy (what a sweeper such as Optuna
    maximises: never the test set). A failed sweep job is recorded and returns NaN, so the
    other jobs go on; a failed single run exits non-zero; SIGTERM or Ctrl-C stops a whole sweep."""
    from kdexp.pipeline import record_run_failure

    quiet_library_noise()
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = run(cfg)
    except KdexpError as err:  # bad input (2), NaN loss (3), unwritable output (4), SIGINT (130), SIGTERM (143)
        record_run_failure(cfg, err)
        if multirun and isinstance(err, RunInterrupted):  # schedulers, `timeout`, `docker stop`
            stop_sweep(cfg, err)
        print_error(err)
        if not multirun:
            sys.exit(err.exit_code)
        return float("nan")
    except Exception as err:
        record_run_failure(cfg, err)
        if not multirun:
            raise
        log.exception("job failed: %s", err)
        return float("nan")
    student = (results or {}).get("student", {})
    return student.get("val_acc_top1", student.get("acc_top1"))


main = with_override_hints(main)  # path overrides Hydra's lexer rejects: a hint to quote them

if __name__ == "__main__":
    main()
