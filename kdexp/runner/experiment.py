"""What a composed config describes, run: a single run, a chain of runs, or a method's own chain
of steps (class-incremental). Errors are KdexpErrors with their exit codes."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run what ``cfg`` describes (a single run or a chain); returns the results (also in
    results.json). Errors are KdexpErrors with their exit codes."""
    from kdexp import phases
    from kdexp.runner.kinds import runs_own_steps
    from kdexp.runner.signals import reported_errors
    from kdexp.runner.spec import RunSpec

    phases.begin_run()
    with reported_errors():  # write errors and signals: clear messages, not tracebacks
        spec = RunSpec.read(cfg)  # the method and its options, parsed once for the whole run
        cls = spec.method_cls
        if spec.task.runner is not None:  # a task that runs its own loop (kdexp.tasks)
            return task_runner(spec.task.runner)(spec)
        if cls.federated is not None or cfg.get("federated"):  # rounds of clients and a server
            return federated_runner(cls)(spec)
        if runs_own_steps(cls) or cfg.get("incremental"):  # a method that runs its own chain of steps
            return step_runner(cls, cfg)(spec)
        if cls.chain is not None:  # a plain chain of runs
            from kdexp.runner.chain import run_chain

            return run_chain(spec)
        from kdexp.runner.single import run_single

        OmegaConf.resolve(cfg)
        return run_single(spec)


def federated_runner(cls: type) -> Any:
    """The runner a federated method's declaration names (kdexp.runner.kinds.STEP_RUNNERS); for
    another method with ``federated=`` set, the federated runner, which says it is not one."""
    from kdexp.methods.declarations import FEDERATED_RUNNER
    from kdexp.runner import federated  # noqa: F401 - registers the federated runner
    from kdexp.runner.kinds import STEP_RUNNERS

    return STEP_RUNNERS.get(cls.federated.runner if cls.federated is not None else FEDERATED_RUNNER)


def step_runner(cls: type, cfg: DictConfig) -> Any:
    """The runner a method's ``chain.runner`` names (kdexp.runner.kinds.STEP_RUNNERS)."""
    from kdexp.errors import SetupError
    from kdexp.methods import METHODS
    from kdexp.runner import incremental  # noqa: F401 - registers "incremental_steps"
    from kdexp.runner.kinds import STEP_RUNNERS, runs_own_steps

    if not runs_own_steps(cls):
        runners = [name for name in METHODS.names() if runs_own_steps(METHODS.get(name))]
        raise SetupError(
            f"incremental runs train with a class-incremental method; method={cfg.method.name} is not "
            f"one: choose one of {', '.join(runners)}"
        )
    return STEP_RUNNERS.get(cls.chain.runner)  # called with the RunSpec


def task_runner(name: str) -> Any:
    """The runner a task's ``runner`` names (kdexp.runner.kinds.TASK_RUNNERS)."""
    from kdexp.runner import own_loop  # noqa: F401 - registers "own_loop"
    from kdexp.runner.kinds import TASK_RUNNERS

    return TASK_RUNNERS.get(name)  # called with the RunSpec
