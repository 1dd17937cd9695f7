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
    title = "CIFAR-10"

    def __init__(self, root: str, download: bool = True, augment: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.download, self.augment = root, download, augment

    def make_datasets(self):
        mean, std = STATS[self.name]
        plain = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        )
        augmented = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), plain])
        train = self.load(True, augmented if self.augment else plain)
        return train, self.load(True, plain), self.load(False, plain)

    def load(self, train: bool, transform) -> datasets.CIFAR10:
        """The torchvision dataset, or a clear error naming data.root and the expected form."""
        folder = f"{self.root}/{self.dataset_class.base_folder}/"
        try:
            return self.dataset_class(self.root, train=train, transform=transform, download=self.download)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted" (download=false)
            raise FileNotFoundError(
                f"data.root={self.root!r} does not hold {self.title} (expected the extracted python "
                f"version in {folder}); set data.download=true to download it there, or point "
                "data.root at the folder that holds it"
            ) from None
        except OSError as err:  # no network, an HTTP error, an unwritable folder
            raise FileNotFoundError(
                f"{self.title} is not in data.root={self.root!r} and could not be downloaded there "
                f"({type(err).__name__}: {err}); download it elsewhere and copy {folder} into data.root"
            ) from None


class CIFAR10DataModule(CIFARDataModule):
    name = "cifar10"
    title = "CIFAR-10"
    num_classes = 10
    dataset_class = datasets.CIFAR10


class CIFAR100DataModule(CIFARDataModule):
    name = "cifar100"
    title = "CIFAR-100"
    num_classes = 100
    dataset_class = datasets.CIFAR100
