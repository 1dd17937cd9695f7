"""The kinds of run a method may declare it runs as, by name: a method's ``chain.runner`` names the
runner of its own chain of steps (class-incremental: ``incremental_steps``, kdexp.runner.incremental),
a federated method's ``federated.runner`` the rounds of clients and a server (``federated_rounds``,
kdexp.runner.federated), so the run layer finds it here, never by a method's name or a module path. A task's ``runner``
(kdexp.tasks) names one of TASK_RUNNERS the same way (a task with its own loop: ``own_loop``)."""

from __future__ import annotations

from typing import Any, Callable

from kdexp.registry import Registry

STEP_RUNNERS: Registry[Callable[[Any], dict[str, Any]]] = Registry("step runner", key="chain.runner")

TASK_RUNNERS: Registry[Callable[[Any], dict[str, Any]]] = Registry("task runner", key="task.runner")


def runs_own_steps(method_cls: Any) -> bool:
    """Whether a method's whole run is its own chain of steps, run by the step runner its
    ``chain`` names (not the plain chain of kdexp.runner.chain)."""
    return method_cls.chain is not None and not method_cls.chain.plain
