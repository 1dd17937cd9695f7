"""``kdexp``: the Hydra entry point. Compose the config, run it (kdexp.runner), report teacher vs student.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep

torch and Lightning are imported only when a run starts, so that `kdexp --help`, `kdexp --cfg job`
and tab completion answer in about a second.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from kdexp.runner.entry import optimized_value, run_job
from kdexp.tools.config import CONFIG_DIR, register_resolvers, with_override_hints

__all__ = ["main", "optimized_value"]
register_resolvers()  # before Hydra composes configs/hydra (run and sweep folder names)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run; return ``optimized_metric`` (default: the student's final validation accuracy)."""
    return run_job(cfg)


main = with_override_hints(main, CONFIG_DIR)  # overrides Hydra rejects: a hint and exit 2

if __name__ == "__main__":
    main()
