"""Fashion-MNIST from IDX gzip files: Debian's `dataset-fashion-mnist` package, or a download."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdexp.data.tensor import TensorDataModule
from kdexp.data.registry import register_dataset

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type codes → numpy dtypes (big-endian where multi-byte).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MEAN, STD = (0.2860,), (0.3530,)  # Fashion-MNIST training-set pixel statistics


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array of its declared shape."""
    path = Path(path)
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_IDX_DTYPES[type_code], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} values, its header declares shape {shape}")
    return array.reshape(shape).astype(array.dtype.newbyteorder("="))


def _missing(folder: Path) -> list[str]:
    return [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def find_idx_root(root: str | None, download_dir: str | None) -> Path:
    """The folder that holds all four IDX files: ``root`` if given, else Debian's folder, else a
    download into ``download_dir``. An explicit ``root`` without the files is an error (never a
    silent fall-back to another copy)."""
    expected = ", ".join(name for pair in FILES.values() for name in pair)
    if root:
        missing = _missing(Path(root))
        if missing:
            raise FileNotFoundError(
                f"data.root={root!r} does not hold Fashion-MNIST: {missing} missing (the four "
                "gzip IDX files of Debian's `dataset-fashion-mnist`); point data.root at a folder "
                "holding them, or set data.root=null to use Debian's package or a download"
            )
        return Path(root)
    if not _missing(Path(DEBIAN_ROOT)):
        return Path(DEBIAN_ROOT)
    if download_dir is None:
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files ({expected}) not found in {DEBIAN_ROOT} and "
            "data.download_dir=null; install the Debian package `dataset-fashion-mnist`, set "
            "data.root to a folder holding them, or set data.download_dir to download them"
        )
    raw = Path(download_dir) / "FashionMNIST" / "raw"
    if not _missing(raw):
        return raw
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(download_dir, download=True)  # writes <download_dir>/FashionMNIST/raw/*.gz
    except (OSError, RuntimeError) as err:  # no network, an HTTP error, a bad archive
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {DEBIAN_ROOT} and could not be downloaded into "
            f"data.download_dir={download_dir!r} ({type(err).__name__}: {err}); install the Debian "
            "package `dataset-fashion-mnist` or set data.root to a folder holding the IDX files "
            f"({expected})"
        ) from None
    return raw


@register_dataset
class FashionMNISTDataModule(TensorDataModule):
    """Fashion-MNIST as uint8 tensors; ``augment`` = random crop (padding 2) + horizontal flip."""

    name = "fashion_mnist"
    num_classes = 10
    input_shape = (1, 28, 28)
    mean, std, pad = MEAN, STD, 2

    def __init__(
        self,
        root: str | None = None,
        download_dir: str | None = None,
        augment: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(augment=augment, **kwargs)
        self.root, self.download_dir = root, download_dir

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder = find_idx_root(self.root, self.download_dir)
        splits = {}
        for split, (images_file, labels_file) in FILES.items():
            images = torch.from_numpy(read_checked(folder / images_file, self.root).copy()).unsqueeze(1)
            labels = torch.from_numpy(read_checked(folder / labels_file, self.root).astype(np.int64))
            if images.ndim != 4 or images.shape[2:] != (28, 28) or labels.ndim != 1:
                raise ValueError(bad_file(folder / images_file, self.root, f"holds shape {tuple(images.shape)}, not N x 28 x 28 images"))
            if len(labels) != len(images) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < 10):
                raise ValueError(bad_file(
                    folder / labels_file, self.root,
                    f"holds {len(labels)} labels for {len(images)} images in {images_file} (or labels outside 0-9): "
                    "a file of another split or data set",
                ))
            splits[split] = (images, labels)
        return splits


def bad_file(path: Path, root: str | None, problem: str) -> str:
    """The message for a damaged data file: which file, what is wrong, how to get a good copy."""
    where = f"data.root={root!r}" if root else "Fashion-MNIST"
    return (
        f"{where}: {path} {problem}. Get a good copy: reinstall Debian's package "
        "(apt-get install --reinstall dataset-fashion-mnist), or delete the file so that it is "
        "downloaded again (data.root=null, data.download_dir=...)"
    )


def read_checked(path: Path, root: str | None) -> np.ndarray:
    """``read_idx`` with a damaged file (truncated, corrupt, not gzip) reported as a ValueError."""
    try:
        return read_idx(path)
    except gzip.BadGzipFile as err:
        raise ValueError(bad_file(path, root, f"is not a valid gzip file ({err})")) from None
    except (EOFError, zlib.error) as err:
        raise ValueError(bad_file(path, root, f"is truncated or corrupt ({type(err).__name__}: {err})")) from None
    except (ValueError, struct.error) as err:
        raise ValueError(bad_file(path, root, f"is not a valid IDX file ({err})")) from None
