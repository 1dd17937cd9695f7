"""What a run's *task* is, declared like a method: what the data is, what the models score, what
its metrics are and how a model is timed. ``task=<name>`` (configs/task/) names a :class:`Task`
registered here; the run layer reads the declaration, never a task's name:

* ``choose_method``: how the config's ``method`` is parsed (the task's own methods);
* ``runner``: None for the run layer's own flow (Lightning, image classification), or the name of
  a runner in kdexp.runner.kinds.TASK_RUNNERS that runs the task's :class:`OwnLoop`;
* ``loop``: the task's data, models, training, evaluation and timing, and what its results.json
  shows (``primary`` metric, ``rows`` of the printed table, ``logged`` HParams metrics).

Every module of this package is imported, so a task is one file with a ``register_task`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kdexp.registry import Registry, import_submodules


class OwnLoop:
    """A task that trains and measures its models itself (its run: kdexp.runner.own_loop). Its
    methods are called in this order: prepare, build_model, check, (train_teacher), make_method,
    fit, evaluate, profile, comparison."""

    primary: str = ""  # the metric a run is judged by: results.json's <role>.<primary>
    rows: tuple[tuple[str, str, str, str | None], ...] = ()  # the table: (label, field, format, comparison key)
    logged: tuple[str, ...] = ()  # the HParams tab's metrics: final/<role>_<field> or final/<comparison key>

    def prepare(self, data_cfg: dict[str, Any], seed: int) -> Any: ...
    def build_model(self, role: str, model_cfg: dict[str, Any], data: Any) -> Any: ...
    def check(self, method: Any, student: Any, teacher: Any, data: Any) -> list[str]: ...
    def train_teacher(self, teacher: Any, data: Any, recipe: dict[str, Any], seed: int,
                      on_epoch: Callable[[int, dict[str, float]], None]) -> dict[str, Any]: ...
    def make_method(self, method: Any, student: Any, teacher: Any, data: Any) -> Any: ...
    def fit(self, module: Any, data: Any, run: dict[str, Any],
            on_epoch: Callable[[int, dict[str, float]], None]) -> dict[str, Any]: ...
    def evaluate(self, model: Any, data: Any, split: str, full: bool = True) -> dict[str, float]: ...
    def profile(self, model: Any, data: Any, profile_cfg: dict[str, Any]) -> dict[str, Any]: ...
    def comparison(self, teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]: ...
    def result_fields(self) -> set[str]: ...


@dataclass(frozen=True)
class Task:
    name: str
    choose_method: Callable[[dict[str, Any]], Any]
    runner: str | None = None
    loop: OwnLoop | None = None


TASKS: Registry[Task] = Registry("task", key="task.name")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)
    return task


def choose_task(cfg: dict[str, Any] | None) -> Task:
    """The task a config's ``task`` node names (none: classification, the configs before tasks)."""
    return TASKS.get((cfg or {}).get("name", "classification"))


import_submodules(__name__)

__all__ = ["OwnLoop", "TASKS", "Task", "choose_task", "register_task"]
