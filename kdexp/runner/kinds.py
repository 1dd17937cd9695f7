"""The kinds of run a method may declare it runs as, by name: a method's ``step_runner`` names the
runner of its own chain of steps (class-incremental: ``incremental_steps``, kdexp.runner.incremental),
so the run layer finds it here, never by a method's name or a module path."""

from __future__ import annotations

from typing import Any, Callable

from kdexp.registry import Registry

STEP_RUNNERS: Registry[Callable[[Any], dict[str, Any]]] = Registry("step runner", key="step_runner")
