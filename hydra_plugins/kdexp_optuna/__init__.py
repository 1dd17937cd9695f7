"""kdexp's Hydra sweeper on Optuna (>= 4, ask-and-tell): ``hydra/sweeper=optuna``.

Its settings (``configs/hydra/sweeper/optuna.yaml``): ``params`` (Hydra sweep overrides:
``interval(a, b)``, ``tag(log, interval(a, b))``, ``choice(...)``, ``range(...)``; sweep overrides
on the command line join them), ``search: auto`` (the method's declared ranges plus the
optimiser's learning rate and weight decay; ``params`` still win), ``n_trials`` (the *study's*
total, shared by every process on it), ``n_jobs`` (trials handed to the launcher at once),
``direction``, ``sampler`` and ``pruner`` (``_target_`` configs), ``study_name``, ``storage`` (an
Optuna RDB URL; null = ``<sweep dir>/optuna.db``), ``max_failure_rate``, ``heartbeat_s``,
``plots``. The work is kdexp.tuning.study's; this module only adapts it to Hydra (light to import:
Hydra imports every plugin at start-up).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("kdexp")
SEARCHES = ("auto",)


class OptunaSweeper(Sweeper):
    """Trials asked from a (possibly shared) Optuna study, run by the configured launcher, told
    back: complete, pruned (by the run's pruning callback) or failed."""

    def __init__(
        self, sampler: Any = None, pruner: Any = None, direction: str = "maximize", storage: Optional[str] = None,
        study_name: Optional[str] = None, n_trials: int = 20, n_jobs: int = 1, max_failure_rate: float = 1.0,
        params: Optional[DictConfig] = None, search: Optional[str] = None, heartbeat_s: int = 60, plots: bool = True,
    ) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.storage, self.study_name = str(direction), storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), float(max_failure_rate)
        self.params, self.search, self.heartbeat_s, self.plots = params, search, int(heartbeat_s), bool(plots)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.pruner_plain: dict[str, Any] | None = None  # the pruner's config, handed to each trial's run

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        pruner = OmegaConf.select(config, "hydra.sweeper.pruner")
        self.pruner_plain = OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else None
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        from kdexp.tuning.space import auto_space, distributions

        if self.search is not None and self.search not in SEARCHES:
            raise ValueError(f"hydra.sweeper.search={self.search!r}: choose auto (the method's declared ranges) or null")
        params = {str(k): str(v) for k, v in (self.params or {}).items()}
        if self.search == "auto":
            params = {**auto_space(self.config), **params}  # a hand-given range wins
        space, fixed = distributions([f"{k}={v}" for k, v in params.items()] + list(arguments))
        if not space:
            raise ValueError(
                "the Optuna sweeper has nothing to search: give hydra.sweeper.params (e.g. "
                "method.temperature: interval(1.0, 10.0)), a sweep override on the command line, or "
                "hydra.sweeper.search=auto (hparams_search=auto)"
            )
        return space, fixed

    def sweep(self, arguments: list[str]) -> None:
        from kdexp.tools.config import SWEPT_ENV
        from kdexp.tuning import plots, study as st

        assert self.config is not None and self.launcher is not None
        try:
            space, fixed = self._space(arguments)
        except ValueError as err:
            from kdexp.errors import SetupError, exit_with

            exit_with(SetupError(str(err)))
        noted = set(filter(None, os.environ.get(SWEPT_ENV, "").split(",")))
        os.environ[SWEPT_ENV] = ",".join(sorted(noted | set(space)))  # job folders: named by the searched values
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        spec = st.StudySpec(st.storage_url(self.storage, sweep_dir), self.study_name or "", self.direction,
                            self.n_trials, self.heartbeat_s)
        sampler, pruner = _built(self.sampler_cfg), _built(self.pruner_cfg)
        study = st.open_study(replace(spec, study_name=self.study_name) if self.study_name else spec, sampler, pruner)
        spec = replace(spec, study_name=study.study_name)
        log.info("Optuna study %r in %s: %d trial(s) of %d to go; searching %s", spec.study_name, spec.storage,
                 max(0, st.remaining(study, spec.n_trials)), spec.n_trials, ", ".join(space))
        done = failed = 0
        while done == 0 or failed / done <= self.max_failure_rate:
            trials = st.ask(study, spec, space, self.n_jobs)
            if not trials:
                break
            for group in _contiguous(trials):
                jobs = [[*fixed, *(_override(k, v) for k, v in t.params.items()),
                         f"++hydra.job.env_set.{st.TRIAL_ENV}={_quoted(st.trial_env(spec, t, self.pruner_plain))}"] for t in group]
                try:
                    with st.Heartbeat(study, group, self.heartbeat_s):
                        returns = self.launcher.launch(jobs, initial_job_idx=group[0].number)
                except BaseException:  # a signal stopped the sweep: the trials run again on resume
                    st.interrupt(study, trials)
                    raise
                for trial, ret in zip(group, returns):
                    state = _tell(study, trial, ret)
                    done, failed = done + 1, failed + (state == "FAIL")
        else:
            log.error("Optuna: %d of %d trials failed, above hydra.sweeper.max_failure_rate=%g; no further trial starts",
                      failed, done, self.max_failure_rate)
        summary = plots.write_results(study, sweep_dir, spec.storage)
        pictures = plots.write_plots(study, sweep_dir) if self.plots else []
        log.info("Optuna study %r: %s; best %s = %s at %s. %s", spec.study_name, summary["trials"],
                 self.direction, summary.get("best_value"), summary.get("best_params"),
                 "Pictures: " + ", ".join(map(str, pictures)) if pictures else "")
        log.info("Browse the study: optuna-dashboard %s", spec.storage)


def _tell(study: Any, trial: Any, ret: Any) -> str:
    from hydra.core.utils import JobStatus

    from kdexp.tuning import study as st

    error = ret._return_value if ret.status == JobStatus.FAILED else None  # JobReturn keeps the exception there
    value = None if error is not None else ret.return_value
    folder = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    if folder:
        trial.set_user_attr(st.RUN_DIR, str(folder))
    return st.tell(study, trial, value, error)


def _built(node: Any) -> Any:
    """A sampler or pruner: Hydra instantiates the sweeper's config recursively, so it usually
    arrives built; a config (a dict with ``_target_``) is built here."""
    if isinstance(node, (dict, DictConfig)):
        from hydra.utils import instantiate

        return instantiate(node) if node else None
    return node


def _contiguous(trials: list[Any]) -> list[list[Any]]:
    """Trials in runs of consecutive numbers: each run launched with its first number as job
    number, so a job's folder starts with its trial's number."""
    groups: list[list[Any]] = []
    for trial in trials:
        if groups and groups[-1][-1].number + 1 == trial.number:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


def _override(key: str, value: Any) -> str:
    from kdexp.tuning.space import override

    return override(key, value)


def _quoted(text: str) -> str:
    """``text`` as a single-quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
