"""``kdexp``: the Hydra entry point. Compose the config, run it, report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from kdexp.methods import METHODS
from kdexp.pipeline import KdexpError, SetupError, reported_errors, run_single
from kdexp.results import write_failure
from kdexp.sweep import check_sweep, job_dirname

log = logging.getLogger("kdexp")
OmegaConf.register_new_resolver("kdexp_dirname", job_dirname, replace=True)

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
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        try:
            check_sweep(cfg, str(hydra_cfg.launcher.get("_target_", "")))
        except ValueError as err:
            raise SetupError(str(err)) from err
    with reported_errors():  # write errors and SIGTERM: clear messages, not tracebacks
        if getattr(METHODS.get(cfg.method.name), "chain_runner", False):  # born_again, takd
            from kdexp.chain import run_chain  # resolves one config per generation itself

            return run_chain(cfg)
        OmegaConf.resolve(cfg)
        return run_single(cfg)


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """Mark the run failed in its results.json, so sweeps and reports show it."""
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
        write_failure(cfg.paths.output_dir, run_info, err)
    except Exception:  # noqa: BLE001 - recording must never hide the original error
        log.debug("could not record the failure", exc_info=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return the student's final validation accuracy (what a sweeper such as Optuna
    maximises: never the test set). A failed sweep job is recorded and returns NaN, so the
    other jobs go on; a failed single run exits non-zero."""
    quiet_library_noise()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = run(cfg)
    except KdexpError as err:  # bad input (exit 2), NaN loss (3), unwritable output (4), SIGTERM (143)
        record_failure(cfg, err)
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
