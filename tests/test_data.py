from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_idx
from kdexp.data import build_datamodule
from kdexp.data.fake import FakeDataModule
from kdexp.data.fashion_mnist import FashionMNISTDataModule, read_idx
from kdexp.data.imagenet import ImageFolderDataModule


def test_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), array)


def test_read_idx_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_from_idx_files(tiny_fashion_mnist: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), val_size=16, batch_size=8)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (48, 16, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Normalised with the dataset statistics: pixel 255 → (1 - 0.2860) / 0.3530.
    assert x.max().item() == pytest.approx((1 - 0.2860) / 0.3530, rel=1e-5)
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)
    # The validation split is fixed, whatever the global seed.
    torch.manual_seed(123)
    other = FashionMNISTDataModule(root=str(tiny_fashion_mnist), val_size=16)
    other.setup("fit")
    assert other.val_set.indices == dm.val_set.indices


def test_fashion_mnist_missing_files_say_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("kdexp.data.fashion_mnist.DEBIAN_ROOT", str(tmp_path / "nowhere"))
    dm = FashionMNISTDataModule(root=str(tmp_path), download_dir=None)
    with pytest.raises(FileNotFoundError, match="data.root"):
        dm.setup("fit")


def test_fake_data_shapes_and_splits() -> None:
    dm = build_datamodule(
        {"name": "fake", "image_shape": [3, 16, 16], "num_classes": 7, "train_size": 20,
         "test_size": 10, "batch_size": 4, "val_size": 0}
    )
    assert isinstance(dm, FakeDataModule)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and int(y.max()) < 7
    assert dm.val_set is dm.test_set  # val_size 0 validates on the test set
    assert dm.input_shape == (3, 16, 16) and dm.num_classes == 7


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: ") as err:
        build_datamodule({"name": "mnist"})
    choices = str(err.value).split("choose one of: ", 1)[1].split(", ")
    assert set(choices) >= {"fashion_mnist", "cifar10", "cifar100", "imagenet", "fake"}  # in registry order


def test_image_folder(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 100, 50, 200)).save(tmp_path / split / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=32, batch_size=6, val_size=0)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.input_shape == (3, 32, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 3, 32, 32)
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="num_classes=5"):
        ImageFolderDataModule(root=str(tmp_path), num_classes=5)
    with pytest.raises(FileNotFoundError, match="train/"):
        ImageFolderDataModule(root=str(tmp_path / "train"))
