"""One LightningDataModule per dataset; ``build_datamodule`` picks one from ``data.name``.

Every module of this package is imported, so a dataset is one module with a
``@register_dataset`` class plus its ``configs/data/<name>.yaml``.
"""

from __future__ import annotations

from typing import Any

from kdexp.data.base import ImageDataModule
from kdexp.data.registry import DATASETS, register_dataset
from kdexp.data.tensor import TensorDataModule
from kdexp.registry import import_submodules

import_submodules(__name__)


def build_datamodule(cfg: dict[str, Any], **tensor_options: Any) -> ImageDataModule:
    """Build the data module named by ``cfg['name']`` with the rest of ``cfg`` as arguments; a key
    the module does not accept (e.g. ``+data.colour=1``) is a ValueError naming the accepted ones.

    ``tensor_options`` (``lean``, ``data_on_device``, ``channels_last``) reach the in-memory
    tensor datasets (Fashion-MNIST, CIFAR) only: how batches are made, not what they hold.
    """
    cls = DATASETS.get(cfg["name"])
    return DATASETS.build(cfg, **(tensor_options if issubclass(cls, TensorDataModule) else {}))


__all__ = ["DATASETS", "ImageDataModule", "TensorDataModule", "build_datamodule", "register_dataset"]
