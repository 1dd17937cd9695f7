"""One LightningDataModule per dataset; ``build_datamodule`` picks one from ``data.name``."""

from __future__ import annotations

from typing import Any

from kdexp.data.base import ImageDataModule
from kdexp.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from kdexp.data.fake import FakeDataModule
from kdexp.data.fashion_mnist import FashionMNISTDataModule
from kdexp.data.imagenet import ImageFolderDataModule
from kdexp.data.tensor import TensorDataModule

DATAMODULES: dict[str, type[ImageDataModule]] = {
    cls.name: cls
    for cls in (
        FashionMNISTDataModule,
        CIFAR10DataModule,
        CIFAR100DataModule,
        ImageFolderDataModule,
        FakeDataModule,
    )
}


def build_datamodule(cfg: dict[str, Any], **tensor_options: Any) -> ImageDataModule:
    """Build the data module named by ``cfg['name']`` with the rest of ``cfg`` as arguments.

    ``tensor_options`` (``lean``, ``data_on_device``, ``channels_last``) reach the in-memory
    tensor datasets (Fashion-MNIST, CIFAR) only: how batches are made, not what they hold.
    """
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in DATAMODULES:
        raise ValueError(f"data.name={name!r} is unknown; choose one of: {', '.join(DATAMODULES)}")
    cls = DATAMODULES[name]
    return cls(**cfg, **(tensor_options if issubclass(cls, TensorDataModule) else {}))


__all__ = ["DATAMODULES", "ImageDataModule", "TensorDataModule", "build_datamodule"]
