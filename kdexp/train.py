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
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from kdexp.pipeline import KdexpError, reported_errors, run_single

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
    with reported_errors():  # write errors and SIGTERM: clear messages, not tracebacks
        if cfg.method.name == "born_again":
            from kdexp.chain import run_chain  # resolves one config per generation itself

            return run_chain(cfg)
        OmegaConf.resolve(cfg)
        return run_single(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    quiet_library_noise()
    try:
        results = run(cfg)
    except KdexpError as err:  # bad input (exit 2), NaN loss (3), unwritable output (4), SIGTERM (143)
        console = Console(stderr=True, soft_wrap=True)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # Hydra's switch for the full stack trace
            traceback.print_exception(err, file=sys.stderr)
        console.print(f"[bold red]kdexp: {err.kind}:[/] {escape(str(err))}")
        sys.exit(err.exit_code)
    # Returned for sweepers that optimise a value (e.g. the Optuna sweeper).
    return results.get("student", {}).get("acc_top1") if results else None


if __name__ == "__main__":
    main()
