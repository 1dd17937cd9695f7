"""CIFAR-10 and CIFAR-100 as uint8 tensors, with the standard crop-and-flip augmentation.

The python-pickle release (``cifar-10-batches-py/``, ``cifar-100-python/`` under ``root``) is read
directly; when it is missing and ``download`` is true, torchvision downloads (and checks) it first.
Augmentation: RandomCrop(32, padding=4) with zero fill + horizontal flip (p = 0.5), then
normalisation with the per-channel training-set statistics below.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from kdexp.data.tensor import TensorDataModule
from kdexp.data.registry import register_dataset

# Per-channel training-set statistics (the values the published KD benchmarks normalise with).
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
# Folder and files of the python release, and the key that holds the labels.
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[Tensor, Tensor]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) from CIFAR python-pickle files."""
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


class CIFARDataModule(TensorDataModule):
    input_shape = (3, 32, 32)
    dataset_class = datasets.CIFAR10
    title = "CIFAR-10"
    pad = 4

    def __init__(self, root: str, download: bool = True, augment: bool = True, **kwargs) -> None:
        super().__init__(augment=augment, **kwargs)
        self.root, self.download = root, download
        self.mean, self.std = STATS[self.name]

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder, train_files, test_files, label_key = LAYOUT[self.name]
        base = Path(self.root) / folder
        files = [base / name for name in train_files + test_files]
        if not all(f.is_file() for f in files):
            if not self.download:
                raise FileNotFoundError(
                    f"data.root={self.root!r} does not hold {self.title} (expected the extracted python "
                    f"version in {base}/); set data.download=true to download it there, or point "
                    f"data.root at the folder that holds {folder}/"
                )
            try:
                self.dataset_class(self.root, train=True, download=True)  # downloads, checks md5
            except (OSError, RuntimeError) as err:  # no network, an HTTP error, an unwritable folder
                raise FileNotFoundError(
                    f"{self.title} is not in data.root={self.root!r} and could not be downloaded there "
                    f"({type(err).__name__}: {err}); download it elsewhere and copy {folder}/ into data.root"
                ) from None
        return {
            "train": self._read([base / n for n in train_files], label_key),
            "test": self._read([base / n for n in test_files], label_key),
        }

    def _read(self, paths: list[Path], label_key: str) -> tuple[Tensor, Tensor]:
        """``read_cifar_batches``, a damaged file reported by name with how to get a good copy."""
        parts = []
        for path in paths:
            try:
                parts.append(read_cifar_batches([path], label_key))
            except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError, IndexError) as err:
                raise ValueError(
                    f"data.root={self.root!r}: {path} is not a readable {self.title} batch file (truncated, "
                    f"corrupt or of another data set: {type(err).__name__}: {err}). Get a good copy: delete "
                    f"{path.parent}/ and run with data.download=true (torchvision checks the archive's md5)"
                ) from None
        return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])


@register_dataset
class CIFAR10DataModule(CIFARDataModule):
    name = "cifar10"
    title = "CIFAR-10"
    num_classes = 10
    dataset_class = datasets.CIFAR10


@register_dataset
class CIFAR100DataModule(CIFARDataModule):
    name = "cifar100"
    title = "CIFAR-100"
    num_classes = 100
    dataset_class = datasets.CIFAR100
