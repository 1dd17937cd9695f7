"""Small image datasets held as uint8 tensors, with two ways to feed them.

* **per-sample** (``lean=False``): a map-style dataset applies torchvision v2 transforms to one
  image at a time (random crop with padding, flip, scale, normalise), in DataLoader workers.
* **lean** (``lean=True``): whole batches are fetched by index (``__getitems__``); training batches
  leave the loader as raw uint8 :class:`RawBatch` es and are cropped, flipped and normalised in one
  go on the device, in the data module's ``on_after_batch_transfer`` hook. The images themselves
  stay on the GPU when training runs on one (``data_on_device``).

Both paths draw the same augmentation (RandomCrop(size, padding=pad) with zero fill, horizontal
flip with p = 0.5, then ``(x / 255 - mean) / std``); the lean path computes those operations in
the same order, so an image and its crop/flip parameters give bit-identical tensors either way.

A lean training batch is ``(x, y, views)``: ``views`` is an int64 ``(B, 4)`` tensor of
``[index, dy, dx, flip]`` — which training sample, which crop offset in the padded image and
whether it was mirrored. That names every view exactly, which is what lets the teacher-output
cache (``kdexp.teacher.outputs``) reuse logits only for the view they were computed on. Without
augmentation every view is ``[index, 0, 0, 0]``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from kdexp.data.base import ImageDataModule


class RawBatch(NamedTuple):
    """A lean training batch as the loader yields it, before augmentation."""

    images: Tensor  # uint8 (B, C, H, W)
    labels: Tensor  # int64 (B,)
    index: Tensor  # int64 (B,): the sample's row in the training tensor


class ViewGrid(NamedTuple):
    """The views a training sample can appear in: ``positions``² crop offsets × ``flips``."""

    num_samples: int
    positions: int  # 2 · pad + 1 with augmentation, else 1
    flips: int  # 2 with augmentation, else 1

    @property
    def views_per_sample(self) -> int:
        return self.positions * self.positions * self.flips


class ImageTensors:
    """uint8 images (N, C, H, W) and int64 labels (N,), shared by the datasets that read them
    (moving them to a device moves them for every dataset at once)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images, self.labels = images.contiguous(), labels.to(torch.int64)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> None:
        self.images, self.labels = self.images.to(device), self.labels.to(device)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (…, C, H, W) → float32 ``(x / 255 - mean) / std``, the ops of v2.ToDtype + v2.Normalize."""
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def crop_flip(images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """The (H, W) window at offset (dy, dx) of each zero-padded image, mirrored where ``flip``.

    ``images`` (B, C, H, W), any dtype; ``dy``, ``dx`` in [0, 2·pad]; ``flip`` 0/1. Equals
    ``hflip(crop(pad(img, pad), dy, dx, H, W))`` per image (torchvision's RandomCrop + flip).
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy.view(b, 1) + ar_h  # (B, H)
    cols = dx.view(b, 1) + torch.where(flip.view(b, 1).bool(), w - 1 - ar_w, ar_w)  # (B, W)
    bi = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


class BatchedImages(Dataset):
    """Batches by index from :class:`ImageTensors` (``__getitems__``, one gather per batch).

    ``raw=True`` (training): :class:`RawBatch` of uint8 images, labels and indices.
    ``raw=False`` (evaluation): ``(x, y)`` with ``x`` normalised float32.
    """

    with_index = False  # evaluation batches: (x, y, index), for the teacher-logits store

    def __init__(self, data: ImageTensors, mean: Sequence[float], std: Sequence[float], raw: bool) -> None:
        self.data, self.raw = data, raw
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitems__(self, indices: list[int]) -> RawBatch | tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.data.device)
        images, labels = self.data.images[index], self.data.labels[index]
        if self.raw:
            return RawBatch(images, labels, index)
        x = normalize(images, *self.stats(images.device))
        return (x, labels, index) if self.with_index else (x, labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """One evaluation-style sample (normalised, no augmentation), for inspection."""
        x = normalize(self.data.images[i], *self.stats(self.data.device))
        return x, self.data.labels[i]

    def stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if self._mean.device != device:
            self._mean, self._std = self._mean.to(device), self._std.to(device)
        return self._mean, self._std


class TransformedImages(Dataset):
    """Per-sample path: uint8 images (N, C, H, W) and labels with a torchvision v2 transform."""

    def __init__(self, data: ImageTensors, transform: v2.Transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.data.images[index]), self.data.labels[index]


def _as_is(batch):  # the batched datasets already return whole batches
    return batch


class TensorDataModule(ImageDataModule):
    """Base of the small in-memory datasets (Fashion-MNIST, CIFAR): subclasses load the uint8
    tensors (``load_splits``) and set ``mean``, ``std`` and ``pad`` (the crop padding).

    ``lean`` picks the batched path (see the module docstring); kdexp runs switch it on through
    ``performance.lean_data``. ``channels_last`` makes the lean path emit channels-last batches.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int

    def __init__(
        self,
        augment: bool = False,
        lean: bool = False,
        data_on_device: bool = True,
        channels_last: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.augment, self.lean = augment, lean
        self.data_on_device, self.channels_last = data_on_device, channels_last
        self._tensors: list[ImageTensors] = []
        self._num_train = 0
        self._norm: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (images, labels), "test": (images, labels)}``: uint8 NCHW, int64."""
        raise NotImplementedError

    # --- datasets --------------------------------------------------------------------------------
    def make_datasets(self):
        splits = self.load_splits()
        train, test = ImageTensors(*splits["train"]), ImageTensors(*splits["test"])
        self._tensors, self._num_train = [train, test], len(train.labels)
        if self.lean:
            return (
                BatchedImages(train, self.mean, self.std, raw=True),
                BatchedImages(train, self.mean, self.std, raw=False),
                BatchedImages(test, self.mean, self.std, raw=False),
            )
        plain = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])
        size = tuple(train.images.shape[-2:])
        augmented = v2.Compose([v2.RandomCrop(size, padding=self.pad), v2.RandomHorizontalFlip(), plain])
        return (
            TransformedImages(train, augmented if self.augment else plain),
            TransformedImages(train, plain),
            TransformedImages(test, plain),
        )

    def indexed(self, dataset):
        if self.lean:  # lean batches name their samples already: views[:, 0] is the index
            return dataset
        return super().indexed(dataset)

    def test_indexed(self, dataset):
        if self.lean and dataset is not None:  # one gather per batch: the index comes with it
            dataset.with_index = self.index_test
            return dataset
        return super().test_indexed(dataset)

    @property
    def view_grid(self) -> ViewGrid | None:
        """The views a training batch can name (lean path only; None on the per-sample path)."""
        if not self.lean or self.test_set is None:
            return None
        positions = 2 * self.pad + 1 if self.augment else 1
        return ViewGrid(self._num_train, positions, 2 if self.augment else 1)

    # --- batches ---------------------------------------------------------------------------------
    def augment_batch(self, batch: RawBatch) -> tuple[Tensor, Tensor, Tensor]:
        """RawBatch → ``(x, y, views)``: random crop + flip (if ``augment``) and normalisation."""
        images, labels, index = batch
        b, device = images.shape[0], images.device
        if self.augment:
            positions = 2 * self.pad + 1
            dy = torch.randint(0, positions, (b,), device=device)
            dx = torch.randint(0, positions, (b,), device=device)
            flip = torch.randint(0, 2, (b,), device=device)
            images = crop_flip(images, dy, dx, flip, self.pad)
        else:
            dy = dx = flip = torch.zeros(b, dtype=torch.int64, device=device)
        x = normalize(images, *self._stats(device))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels, torch.stack([index.to(device), dy, dx, flip], dim=1)

    def _stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._norm:
            as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)  # noqa: E731
            self._norm[device] = (as_tensor(self.mean), as_tensor(self.std))
        return self._norm[device]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, RawBatch):
            return self.augment_batch(batch)
        if self.channels_last and isinstance(batch, (tuple, list)) and batch and batch[0].ndim == 4:
            return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        return batch

    # --- loaders ---------------------------------------------------------------------------------
    def _place_tensors(self) -> None:
        """Lean path on a GPU run: move the uint8 images to the GPU once (``data_on_device``)."""
        trainer = getattr(self, "trainer", None)
        if not (self.lean and self.data_on_device and trainer is not None):
            return
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return
        for tensors in self._tensors:
            if tensors.device != device:
                tensors.to(device)

    def _loader(self, dataset, shuffle: bool, batch_size: int, evaluate: bool = False):
        if not self.lean:
            return super()._loader(dataset, shuffle, batch_size, evaluate)
        self._place_tensors()
        on_device = bool(self._tensors) and self._tensors[0].device.type != "cpu"
        from torch.utils.data import DataLoader

        assert dataset is not None, "call setup() first"
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler(dataset, shuffle, evaluate),
            drop_last=False,
            num_workers=0,  # one gather per batch: worker processes would only add copies
            pin_memory=self.pin_memory and not on_device,
            collate_fn=_as_is,
        )
