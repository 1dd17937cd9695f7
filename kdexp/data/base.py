"""The shared shape of every kdexp data module: datasets in, three dataloaders out."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset


class EpochShuffle(Sampler[int]):
    """A shuffled order of ``range(size)`` that is a function of (seed, epoch) alone.

    When the epoch's first index is requested (after Lightning has created the iterator and run
    ``on_train_epoch_start``, in a fresh and in a resumed run alike), it also reseeds Python's,
    NumPy's and torch's global RNGs from (seed, epoch), which the epoch's augmentation (without
    worker processes) and dropout draw from. Checkpoints hold no RNG state, so this is what makes a
    run resumed at an epoch boundary train exactly like an uninterrupted one. (Augmentation in
    DataLoader worker processes draws from the workers' own RNGs, which are not reproduced.)
    """

    def __init__(self, size: int, seed: int, epoch: Callable[[], int]) -> None:
        self.size, self.seed, self.epoch = size, int(seed), epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        epoch_seed = (self.seed * 1_000_003 + int(self.epoch()) + 1) % 2**63
        random.seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        torch.manual_seed(epoch_seed)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(epoch_seed))
        yield from order.tolist()

from kdexp.distributed import eval_sampler


class WithIndex(Dataset):
    """``dataset[i] + (row,)``: each sample with its row in the full training set — ``i`` itself, or
    for a :class:`Subset` (the split that remains after a validation hold-out) the row it maps to,
    as the lean tensor path names it too. The default collate stacks them into a (B,) int64 tensor,
    the batch's third element."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.rows = list(dataset.indices) if isinstance(dataset, Subset) else None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        x, y = self.dataset[index]
        return x, y, self.rows[index] if self.rows is not None else index


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
        # The seed of the training order; None = torch.initial_seed() when the loader is built
        # (the seed of the latest seed_everything: the run's, or the teacher's while it trains).
        self.shuffle_seed: int | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        # True: training batches are (x, y, index) (set by methods with ``needs_sample_indices``).
        self.with_index = False

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

    def current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _sampler(self, dataset: Dataset, shuffle: bool, evaluate: bool) -> Sampler | None:
        if shuffle:  # the order of each epoch from (seed, epoch): exact resume (EpochShuffle)
            seed = self.shuffle_seed if self.shuffle_seed is not None else torch.initial_seed()
            return EpochShuffle(len(dataset), seed, self.current_epoch)
        if evaluate:  # under DDP, evaluation shards are not padded: every sample counted once
            return eval_sampler(dataset, self.trainer)
        return None

    def _loader(self, dataset: Dataset | None, shuffle: bool, batch_size: int, evaluate: bool = False) -> DataLoader:
        assert dataset is not None, "call setup() first"
        sampler = self._sampler(dataset, shuffle, evaluate)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def indexed(self, dataset: Dataset | None) -> Dataset | None:
        """The training set as the loader reads it: with each sample's index if ``with_index``."""
        return WithIndex(dataset) if self.with_index and dataset is not None else dataset

    def sample_rows(self) -> tuple[int, list[int]]:
        """(size of the full training set, its rows that train): the range of the sample indices
        training batches carry (all rows, unless ``val_size`` holds some out); call ``setup`` first."""
        assert self.train_set is not None, "call setup() first"
        if isinstance(self.train_set, Subset):
            return len(self.train_set.dataset), list(self.train_set.indices)  # type: ignore[arg-type]
        size = len(self.train_set)  # type: ignore[arg-type]
        return size, list(range(size))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.indexed(self.train_set), True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size, evaluate=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size, evaluate=True)


