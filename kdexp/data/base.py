"""The shared shape of every kdexp data module: datasets in, three dataloaders out."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from kdexp.distributed import eval_sampler


class ImageDataModule(pl.LightningDataModule):
    """Base class: subclasses set ``num_classes``, ``input_shape`` and implement ``make_datasets``.

    ``val_size`` > 0 holds out that many training images (a fixed split, independent of the run
    seed, so runs are comparable); ``val_size`` = 0 validates on the test set, as the published
    CIFAR benchmark protocol does.
    """

    name: str = "base"
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width)

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int = 0,
        pin_memory: bool = False,
        **_: object,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return (train, train_as_eval, test): the training set with and without augmentation."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        train, train_eval, test = self.make_datasets()
        if self.val_size > 0:
            n = len(train)
            if not 0 < self.val_size < n:
                raise ValueError(f"data.val_size={self.val_size} must be between 0 and {n}")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
            train_idx, val_idx = order[self.val_size :], order[: self.val_size]
            self.train_set = Subset(train, train_idx)
            self.val_set = Subset(train_eval, val_idx)
        else:
            self.train_set, self.val_set = train, test
        self.test_set = test

    def _loader(self, dataset: Dataset | None, shuffle: bool, batch_size: int, evaluate: bool = False) -> DataLoader:
        assert dataset is not None, "call setup() first"
        # Under DDP, evaluation shards are not padded: every sample is counted exactly once.
        sampler = eval_sampler(dataset, self.trainer) if evaluate else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size, evaluate=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size, evaluate=True)


