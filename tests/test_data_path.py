"""The lean tensor data path: batched crop/flip equals torchvision's per-image transforms, views
are reported honestly, CIFAR pickles are read directly, and Lightning runs the batch hook."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from kdexp.data import build_datamodule
from kdexp.data.cifar import CIFAR10DataModule, CIFAR100DataModule, STATS
from kdexp.data.fashion_mnist import MEAN, STD, FashionMNISTDataModule
from kdexp.data.tensor import RawBatch, crop_flip, normalize


def reference_view(image: torch.Tensor, dy: int, dx: int, flip: int, pad: int) -> torch.Tensor:
    """torchvision's RandomCrop(padding=pad) + flip with fixed parameters, on one uint8 image."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [pad]), dy, dx, h, w)
    return TF.horizontal_flip(out) if flip else out


def test_crop_flip_matches_torchvision_for_every_view() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    pad = 2
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            for flip in (0, 1):
                params = [torch.tensor([v, v]) for v in (dy, dx, flip)]
                got = crop_flip(images, *params, pad=pad)
                for i in range(2):
                    assert torch.equal(got[i], reference_view(images[i], dy, dx, flip, pad))


def test_normalize_is_bit_identical_to_torchvision() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = STATS["cifar100"]
    expected = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), mean, std)
    got = normalize(images, torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1))
    assert torch.equal(got, expected)


def write_cifar(root: Path, name: str, n_train: int = 40, n_test: int = 16) -> None:
    """Tiny CIFAR python-pickle files (the release's layout and keys)."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, key, classes = root / "cifar-10-batches-py", "labels", 10
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files = ["test_batch"]
    else:
        folder, key, classes = root / "cifar-100-python", "fine_labels", 100
        train_files, test_files = ["train"], ["test"]
    folder.mkdir(parents=True)
    for files, n in ((train_files, n_train), (test_files, n_test)):
        per = n // len(files)
        for f in files:
            entry = {
                "data": rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                key: [int(v) for v in rng.integers(0, classes, per)],
            }
            with open(folder / f, "wb") as fh:
                pickle.dump(entry, fh)


@pytest.mark.parametrize("cls", [CIFAR10DataModule, CIFAR100DataModule])
def test_cifar_reads_pickles_into_tensors(tmp_path: Path, cls) -> None:
    write_cifar(tmp_path, cls.name)
    dm = cls(root=str(tmp_path), download=False, batch_size=8, lean=True)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.test_set)) == (40, 16)
    raw = next(iter(dm.train_dataloader()))
    assert isinstance(raw, RawBatch) and raw.images.dtype == torch.uint8
    assert raw.images.shape == (8, 3, 32, 32)
    x, y, views = dm.on_after_batch_transfer(raw, 0)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert views.shape == (8, 4) and torch.equal(views[:, 0], raw.index)
    assert dm.view_grid == (40, 9, 2) and dm.view_grid.views_per_sample == 162
    # Evaluation batches come out normalised, without augmentation.
    xe, ye = next(iter(dm.test_dataloader()))
    assert xe.dtype == torch.float32 and ye.shape == (8,)


def test_cifar_missing_files_name_the_key(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(root=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="data.root"):
        dm.setup("fit")


def test_lean_training_views_are_exactly_what_the_images_show(tmp_path: Path) -> None:
    """Every augmented image equals torchvision's transform of the sample with the reported
    (index, dy, dx, flip): the views a batch names are the views it holds."""
    write_cifar(tmp_path, "cifar10")
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=16, lean=True)
    dm.setup("fit")
    torch.manual_seed(1)
    x, _, views = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    images = dm._tensors[0].images
    mean, std = STATS["cifar10"]
    for xi, (index, dy, dx, flip) in zip(x, views.tolist()):
        view = reference_view(images[index], dy, dx, flip, pad=4)
        expected = TF.normalize(TF.to_dtype(view, torch.float32, scale=True), mean, std)
        assert torch.equal(xi, expected)
    assert len({tuple(v) for v in views[:, 1:].tolist()}) > 1  # offsets and flips do vary


def test_lean_and_per_sample_paths_agree_without_augmentation(tiny_fashion_mnist: Path) -> None:
    kw = dict(root=str(tiny_fashion_mnist), val_size=16, batch_size=8)
    lean, plain = FashionMNISTDataModule(lean=True, **kw), FashionMNISTDataModule(**kw)
    for dm in (lean, plain):
        dm.setup("fit")
    # The same fixed validation split, and bit-identical evaluation batches.
    assert lean.val_set.indices == plain.val_set.indices
    for a, b in zip(lean.val_dataloader(), plain.val_dataloader()):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # A training batch names rows of the full training tensor (the Subset maps them back).
    x, y, views = lean.on_after_batch_transfer(next(iter(lean.train_dataloader())), 0)
    assert torch.equal(views[:, 1:], torch.zeros(8, 3, dtype=torch.int64))
    assert set(views[:, 0].tolist()) <= set(lean.train_set.indices)
    for xi, yi, index in zip(x, y, views[:, 0].tolist()):
        ref_x, ref_y = plain.train_set.dataset[index]
        assert torch.equal(xi, ref_x) and yi == ref_y
    assert x.max().item() == pytest.approx((1 - MEAN[0]) / STD[0], rel=1e-5)
    assert lean.view_grid == (64, 1, 1)
    assert plain.view_grid is None  # the per-sample path names no views


def test_fashion_mnist_augmentation_uses_padding_two(tiny_fashion_mnist: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), augment=True, lean=True, batch_size=32)
    dm.setup("fit")
    assert dm.view_grid == (64, 5, 2)  # 5 x 5 offsets x 2 flips = 50 views
    _, _, views = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert int(views[:, 1:3].max()) <= 4


def test_channels_last_batches(tiny_fashion_mnist: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, channels_last=True, batch_size=8)
    dm.setup("fit")
    x, _, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_build_datamodule_passes_speed_options_to_tensor_datasets_only(tiny_fashion_mnist: Path) -> None:
    dm = build_datamodule({"name": "fashion_mnist", "root": str(tiny_fashion_mnist)}, lean=True)
    assert dm.lean
    fake = build_datamodule({"name": "fake"}, lean=True)
    assert not hasattr(fake, "lean")
