"""The run layer: a config in, a finished run's results out.

    entry.py     what the kdexp command does: job checks, failures and exit codes, sweep value
    build.py     config → checks, data, models (teacher provided), method module, trainers
    fit.py       fit (resuming where asked) and test; signals and NaN losses become clear errors
    assemble.py  results by role, profiles, comparison, HParams row → results.json, the table
    folder.py    the run folder: last.ckpt, weights, archived results, the failure record
    signals.py   SIGTERM / SIGINT and write errors around a whole run
    single.py    one run: prepare → module → fit and test → results
    chain.py     a chain of runs (Born-Again) reusing single runs and the same results code

No method is named here: what a method needs (a teacher, a chain, extra result fields) it
declares on its class (kdexp.methods.base.DistillationModule). Importing this package is light;
torch and Lightning load with the modules that need them.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run what ``cfg`` describes (a single run or a chain); returns the results (also in
    results.json). Errors are KdexpErrors with their exit codes."""
    from kdexp import phases
    from kdexp.run.build import method_of
    from kdexp.run.signals import reported_errors

    phases.begin_run()
    with reported_errors():  # write errors and signals: clear messages, not tracebacks
        cls = method_of(cfg)
        if cls.step_runner or cfg.get("incremental"):  # a method that runs its own chain of steps
            return step_runner(cls, cfg)(cfg)
        if cls.chain_runner:
            from kdexp.run.chain import run_chain  # resolves one config per run of the chain

            return run_chain(cfg)
        from kdexp.run.single import run_single

        OmegaConf.resolve(cfg)
        return run_single(cfg)


def step_runner(cls: type, cfg: DictConfig) -> Any:
    """The function a method's ``step_runner`` names ("module:function")."""
    import importlib

    from kdexp.errors import SetupError
    from kdexp.methods import METHODS

    if not cls.step_runner:
        runners = [name for name in METHODS.names() if METHODS.get(name).step_runner]
        raise SetupError(
            f"incremental runs train with a class-incremental method; method={cfg.method.name} is not "
            f"one: choose one of {', '.join(runners)}"
        )
    module, _, function = cls.step_runner.partition(":")
    return getattr(importlib.import_module(module), function)


def record_run_failure(cfg: DictConfig, err: BaseException) -> None:
    """Record a run that stopped in its results.json (kdexp.run.folder)."""
    from kdexp.run.folder import record_run_failure as record

    record(cfg, err)


class _RunPackage(types.ModuleType):
    """``kdexp.run`` is both this package and the Python API's function: once the package is
    imported, Python makes it the ``run`` attribute of ``kdexp``, so calling it must still run an
    experiment (kdexp.api.run)."""

    def __call__(self, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, Any]:
        from kdexp.api import run

        return run(overrides, output_dir)


sys.modules[__name__].__class__ = _RunPackage

__all__ = ["record_run_failure", "run_experiment"]
