"""The registry of data modules: ``@register_dataset`` on a class registers it under its ``name``."""

from __future__ import annotations

from typing import TypeVar

from kdexp.registry import Registry

# How batches are made, not what they hold: passed by the run layer (performance.*), never data.*.
TENSOR_OPTIONS = ("lean", "data_on_device", "channels_last")
DATASETS: Registry = Registry("data", internal=TENSOR_OPTIONS)

C = TypeVar("C", bound=type)


def register_dataset(cls: C) -> C:
    """Class decorator: ``data=<cls.name>`` selects ``cls``; its ``__init__`` arguments (and its
    bases') are the keys ``configs/data/<name>.yaml`` may hold."""
    return DATASETS.register(cls.name)(cls)
