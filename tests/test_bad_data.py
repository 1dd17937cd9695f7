"""Damaged data files end in a message that names the file, what is wrong and how to get a good
copy (a ValueError, which the CLI turns into exit 2), never a traceback from gzip or pickle."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdexp.data.cifar import CIFAR10DataModule
from kdexp.data.fashion_mnist import FashionMNISTDataModule


def damage(root: Path, how: str) -> str:
    """Damage one of the tiny Fashion-MNIST files; return the name of the file that is now bad."""
    images, labels = root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
        return images.name
    if how == "byte_flipped":
        data = bytearray(images.read_bytes())
        data[len(data) // 2] ^= 0xFF
        images.write_bytes(bytes(data))
        return images.name
    if how == "not_gzip":
        images.write_bytes(gzip.decompress(images.read_bytes()))
        return images.name
    if how == "wrong_split":
        shutil.copy(root / "t10k-labels-idx1-ubyte.gz", labels)  # 32 test labels for 64 train images
        return labels.name
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "byte_flipped", "not_gzip", "wrong_split"])
def test_damaged_fashion_mnist_file_is_named(tiny_fashion_mnist: Path, how: str) -> None:
    bad = damage(tiny_fashion_mnist, how)
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), val_size=16, batch_size=8)
    with pytest.raises(ValueError) as caught:
        dm.prepare_data()
        dm.setup("fit")
    message = str(caught.value)
    assert f"data.root='{tiny_fashion_mnist}'" in message and bad in message
    assert "Get a good copy" in message and "dataset-fashion-mnist" in message


@pytest.mark.parametrize("how", ["truncated", "not_a_pickle", "other_dataset"])
def test_damaged_cifar_file_is_named(tmp_path: Path, how: str) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (base / name).write_bytes(pickle.dumps(entry))
    bad = base / "data_batch_3"
    if how == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif how == "not_a_pickle":
        bad.write_text("<html>proxy error</html>")
    else:  # a CIFAR-100 file where CIFAR-10's belongs: no "labels" key
        bad.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0] * 4}))
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2, batch_size=2)
    with pytest.raises(ValueError) as caught:
        dm.prepare_data()
        dm.setup("fit")
    message = str(caught.value)
    assert str(bad) in message and "data.download=true" in message
