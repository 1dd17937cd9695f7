"""A run's config read once: its task and the method it names with its parsed options, and the checkpoint
``ckpt_path`` resolves to. Built by kdexp.runner.experiment and handed down, so no later step
parses the method's options or reads the checkpoint again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from kdexp.errors import SetupError
from kdexp.methods import DistillationModule, MethodChoice
from kdexp.runner.folder import read_ckpt
from kdexp.tasks import Task, choose_task
from kdexp.tools.config import plain

# Problems in the config that are reported as one clear paragraph, without a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError)


@dataclass
class RunSpec:
    """``cfg`` (one run's, or one step's of a chain) with what is read from it once."""

    cfg: DictConfig
    method: MethodChoice
    task: Task = field(default_factory=lambda: choose_task(None))  # task=<name>: what the run's data and metrics are
    _checkpoint: tuple[str, int] | None = field(default=None, repr=False)  # (path, epoch) once read

    @classmethod
    def read(cls, cfg: DictConfig) -> RunSpec:
        """The spec of ``cfg``; a SetupError naming the key if ``cfg.method`` is not a method's
        config (an unknown method or option, a value out of range) of the task ``cfg.task`` names."""
        try:
            task = choose_task(plain(cfg.get("task")))
            return cls(cfg, task.choose_method(plain(cfg.method)), task)
        except CONFIG_ERRORS as err:
            raise SetupError(str(err)) from err

    def for_step(self, cfg: DictConfig) -> RunSpec:
        """The spec of one run of a chain (its own folder, seed and student; the same method)."""
        return RunSpec(cfg, self.method, self.task)

    @property
    def method_cls(self) -> type[DistillationModule]:
        return self.method.cls

    @property
    def options(self) -> Any:
        return self.method.options

    @property
    def needs_teacher(self) -> bool:
        return self.method.needs_teacher

    def ckpt_path(self, missing_ok: bool = False) -> str | None:
        """The checkpoint ``ckpt_path`` names, checked against this run's settings and read once
        (kdexp.runner.folder.read_ckpt). ``missing_ok``: a missing ``last`` starts afresh."""
        found = self._read_ckpt(missing_ok)
        return found[0] if found else None

    def ckpt_epoch(self) -> int | None:
        """The 0-based epoch that checkpoint ends (None: no ``ckpt_path``)."""
        found = self._read_ckpt(missing_ok=False)
        return found[1] if found else None

    def _read_ckpt(self, missing_ok: bool) -> tuple[str, int] | None:
        if self._checkpoint is None:
            self._checkpoint = read_ckpt(self.cfg, self.needs_teacher, missing_ok=missing_ok)
        return self._checkpoint
