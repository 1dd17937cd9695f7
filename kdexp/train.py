"""``kdexp``: the Hydra entry point. Compose the config, run it (kdexp.run), report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep

torch and Lightning are imported only when a run starts, so that `kdexp --help`, `kdexp --cfg job`
and tab completion answer in about a second.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from kdexp.checks import with_override_hints
from kdexp.run.entry import optimized_value, register_resolvers, run_job

__all__ = ["main", "optimized_value"]
register_resolvers()  # before Hydra composes configs/hydra (run and sweep folder names)

# The repository's configs/ folder (an absolute path: Hydra would read "../configs" as a module).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return ``optimized_metric`` (default: the student's final validation accuracy)."""
    return run_job(cfg)


main = with_override_hints(main)  # path overrides Hydra's lexer rejects: a hint to quote them

if __name__ == "__main__":
    main()
