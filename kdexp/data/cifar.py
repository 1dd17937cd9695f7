"""CIFAR-10 and CIFAR-100 through torchvision, with the standard crop-and-flip augmentation."""

from __future__ import annotations

from torchvision import datasets
from torchvision.transforms import v2

import torch

from kdexp.data.base import ImageDataModule

# Per-channel training-set statistics (the values the published KD benchmarks normalise with).
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


class CIFARDataModule(ImageDataModule):
    input_shape = (3, 32, 32)
    dataset_class = datasets.CIFAR10

    def __init__(self, root: str, download: bool = True, augment: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.download, self.augment = root, download, augment

    def make_datasets(self):
        mean, std = STATS[self.name]
        plain = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        )
        augmented = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), plain])
        make = lambda train, t: self.dataset_class(  # noqa: E731
            self.root, train=train, transform=t, download=self.download
        )
        return make(True, augmented if self.augment else plain), make(True, plain), make(False, plain)


class CIFAR10DataModule(CIFARDataModule):
    name = "cifar10"
    num_classes = 10
    dataset_class = datasets.CIFAR10


class CIFAR100DataModule(CIFARDataModule):
    name = "cifar100"
    num_classes = 100
    dataset_class = datasets.CIFAR100
