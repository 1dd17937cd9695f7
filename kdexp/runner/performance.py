"""The ``performance`` config group: speed switches applied to the data module and the method
module — the lean tensor data path, the teacher-output cache, channels-last and torch.compile.
None of them changes what a run computes, except ``teacher_cache_dtype`` below float32 (rounded
stored logits) and the numerics of compiled kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdexp.data import ImageDataModule
from kdexp.methods import MethodChoice
from kdexp.teacher.outputs import attach_output_cache, resolve_cache


def data_options(perf: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``build_datamodule`` (they reach the tensor datasets only)."""
    return {
        "lean": bool(perf.get("lean_data", True)),
        "data_on_device": bool(perf.get("data_on_device", True)),
        "channels_last": bool(perf.get("channels_last", False)),
    }


def check_performance(perf: dict[str, Any], method: MethodChoice, datamodule) -> None:
    """Option values, and ``teacher_cache=on`` where it cannot be exact: before any teacher work."""
    from kdexp.teacher.outputs import DTYPES, STORAGES

    for key, allowed in (("teacher_cache_dtype", DTYPES), ("teacher_cache_storage", STORAGES)):
        if key in perf and str(perf[key]) not in allowed:
            raise ValueError(f"performance.{key}={perf[key]!r} is not one of {', '.join(allowed)}")
    if method.needs_teacher:
        grid = getattr(datamodule, "view_grid", None)
        exact = method.cls.teacher_use.logits_only
        resolve_cache(perf, method.name, exact, None, grid, datamodule.name)


def apply_performance(
    module, datamodule: ImageDataModule, perf: dict[str, Any], method_name: str, run_dir: str | Path
) -> None:
    """channels_last, compile and the teacher-output cache (kdexp.teacher.outputs) on a freshly
    built method module."""
    if perf.get("channels_last"):
        module.to(memory_format=torch.channels_last)
        if module.teacher is not None:
            module.teacher.to(memory_format=torch.channels_last)
    if perf.get("compile"):
        module.student.compile(backend=str(perf.get("compile_backend", "inductor")))
    attach_output_cache(module, datamodule, perf, method_name, run_dir)
