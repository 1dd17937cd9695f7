"""One LightningDataModule per dataset; ``build_datamodule`` picks one from ``data.name``, or
builds a user's own from ``data._target_`` (kdexp.data.imported).

Every module of this package is imported, so a dataset is one module with a
``@register_dataset`` class plus its ``configs/data/<name>.yaml``. Every data config states
``num_classes`` and ``input_shape`` ([C, H, W]), so a model config can say ``${data.num_classes}``
and ``${data.input_shape[0]}``; where the data module does not take them as options they are
facts, checked against the module and left out of every key (:func:`data_identity`).
"""

from __future__ import annotations

from typing import Any

from kdexp.data.base import ImageDataModule
from kdexp.data.imported import FACTS, PythonDataModule, build_python_data
from kdexp.data.registry import DATASETS, register_dataset
from kdexp.data.tensor import TensorDataModule
from kdexp.registry import TARGET, accepted_keys, import_submodules

import_submodules(__name__)


def stated_facts(cfg: dict[str, Any]) -> set[str]:
    """The keys of ``cfg`` that state what the data is (``num_classes``, ``input_shape``) without
    choosing it: those its registered module does not take as options."""
    if TARGET in cfg or cfg.get("name") not in DATASETS:
        return set()
    taken = DATASETS.accepted(cfg["name"]) or []
    return {k for k in FACTS if k in cfg and k not in taken}


def data_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without its stated facts: what the cache keys and a run's definition hold (a stated
    fact changes nothing the module builds, so adding one keeps every key)."""
    facts = stated_facts(cfg)
    return {k: v for k, v in cfg.items() if k not in facts}


def build_datamodule(cfg: dict[str, Any], **tensor_options: Any) -> ImageDataModule:
    """Build the data module named by ``cfg['name']`` with the rest of ``cfg`` as arguments; a key
    the module does not accept (e.g. ``+data.colour=1``) is a ValueError naming the accepted ones.
    A ``_target_`` config is a user's own data (kdexp.data.imported).

    ``tensor_options`` (``lean``, ``data_on_device``, ``channels_last``) reach the in-memory
    tensor datasets (Fashion-MNIST, CIFAR) only: how batches are made, not what they hold.
    """
    if TARGET in cfg:
        return build_python_data(cfg, accepted_keys(ImageDataModule) or [])
    cls = DATASETS.get(cfg["name"])
    facts = stated_facts(cfg)
    module = DATASETS.build(
        {k: v for k, v in cfg.items() if k not in facts}, **(tensor_options if issubclass(cls, TensorDataModule) else {})
    )
    for key in facts:  # stated beside a module that knows its own: they must agree
        stated, actual = cfg[key], getattr(module, key, None)
        if stated is not None and actual is not None and list(_seq(stated)) != list(_seq(actual)):
            raise ValueError(f"data.{key}={stated!r} but data={cfg['name']} has {key} {_seq(actual)!r}")
    return module


def _seq(value: Any) -> list[Any]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


__all__ = [
    "DATASETS",
    "ImageDataModule",
    "PythonDataModule",
    "TensorDataModule",
    "build_datamodule",
    "data_identity",
    "register_dataset",
    "stated_facts",
]
