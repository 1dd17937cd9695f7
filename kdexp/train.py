"""``kdexp``: the Hydra entry point. Compose the config, run it, report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep
"""

from __future__ import annotations

import logging
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
from kdexp.distributed import register_resolvers  # noqa: F401  (the run folder's resolvers, on import)
from kdexp.errors import KdexpError, SetupError, print_error
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
    if "." not in str(cfg.get("optimized_metric", "student.val_acc_top1")):
        raise SetupError(
            f"optimized_metric={cfg.optimized_metric!r} must name a results.json number as "
            "<section>.<field>, e.g. student.val_acc_top1 (the default) or comparison.speedup_latency_b1"
        )
    from kdexp.run import run_experiment  # torch and Lightning: only once a run starts

    return run_experiment(cfg)


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    from kdexp.run import record_run_failure

    record_run_failure(cfg, err)


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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return ``optimized_metric`` from the results (what a sweeper such as Optuna
    maximises; by default the student's final validation accuracy, never the test set). A failed sweep job is recorded and returns NaN, so the
    other jobs go on; a failed single run exits non-zero."""
    quiet_library_noise()
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = run(cfg)
    except KdexpError as err:  # bad input (2), NaN loss (3), unwritable output (4), SIGINT (130), SIGTERM (143)
        record_failure(cfg, err)
        print_error(err)
        if not multirun:
            sys.exit(err.exit_code)
        return float("nan")
    except Exception as err:
        record_failure(cfg, err)
        if not multirun:
            raise
        log.exception("job failed: %s", err)
        return float("nan")
    if not results:  # DDP ranks other than 0 do not report
        return None
    try:
        return optimized_value(results, cfg.get("optimized_metric", "student.val_acc_top1"))
    except SetupError as err:  # the results are written; only the sweeper's value is missing
        print_error(err)
        if not multirun:
            sys.exit(err.exit_code)
        return float("nan")


main = with_override_hints(main)  # path overrides Hydra's lexer rejects: a hint to quote them

if __name__ == "__main__":
    main()
