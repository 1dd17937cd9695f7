"""A user's own data, in Hydra's idiom: a data config naming an importable callable.

    # <config dir>/data/shapes.yaml
    name: shapes                        # its name in tables, reports and cache keys
    _target_: mydata.shapes             # a function returning (train, test) Datasets (or
                                        # (train, train_as_eval, test)), or a LightningDataModule
    num_classes: 3                      # what the data is: checked on its samples
    input_shape: [3, 32, 32]            # (channels, height, width) of one image
    root: ${paths.data_dir}/shapes      # the target's own arguments, beside it
    val_size: 30                        # kdexp's loader options, as for every data set
    batch_size: 32

kdexp makes the loaders itself (batch size, validation hold-out, the epoch order that makes resume
exact, sample indices for the methods that need them), so a LightningDataModule gives only its
datasets: those of its ``train_dataloader()`` and ``test_dataloader()``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from kdexp.data.base import ImageDataModule
from kdexp.registry import TARGET, accepted_keys, locate

FACTS = ("num_classes", "input_shape")  # what a data config says its data is (checked on samples)


class PythonDataModule(ImageDataModule):
    """The datasets a user's ``_target_`` returns, behind kdexp's loaders."""

    def __init__(
        self, target: str, name: str, num_classes: int, input_shape: tuple[int, int, int],
        options: dict[str, Any] | None = None, **loader: Any,
    ) -> None:
        super().__init__(**loader)
        self.target, self.name, self.options = target, name, dict(options or {})
        self.num_classes, self.input_shape = int(num_classes), tuple(int(v) for v in input_shape)
        self.make = _locate(target)

    def make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        made = self.make(**self.options)
        if isinstance(made, pl.LightningDataModule):
            made.prepare_data()
            made.setup("fit")
            train = made.train_dataloader().dataset
            made.setup("test")
            test = made.test_dataloader().dataset
            sets: tuple = (train, train, test)
        elif isinstance(made, (tuple, list)) and len(made) in (2, 3) and all(isinstance(d, Dataset) for d in made):
            sets = (made[0], made[0], made[1]) if len(made) == 2 else tuple(made)
        else:
            raise ValueError(
                f"data._target_={self.target!r} returned {type(made).__name__}; it must return a LightningDataModule, "
                "or (train, test) torch.utils.data.Dataset objects (or (train, train_as_eval, test))"
            )
        for split, dataset in (("training", sets[0]), ("test", sets[2])):
            self.check_sample(split, dataset)
        return sets  # type: ignore[return-value]

    def check_sample(self, split: str, dataset: Dataset) -> None:
        """The first sample of ``dataset`` must be (image tensor of ``input_shape``, class index)."""
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"data._target_={self.target!r}: its {split} set is empty")
        sample = dataset[0]
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise ValueError(f"data._target_={self.target!r}: a {split} sample must be (image, label); got {type(sample).__name__}")
        image, label = sample
        if not isinstance(image, torch.Tensor):
            raise ValueError(
                f"data._target_={self.target!r}: {split} images are {type(image).__name__}, not tensors "
                "(give the dataset a transform that ends in a tensor, e.g. torchvision's v2.ToImage + v2.ToDtype)"
            )
        if tuple(image.shape) != self.input_shape:
            raise ValueError(
                f"data.input_shape={list(self.input_shape)} but the {split} images of {self.target} have shape "
                f"{list(image.shape)}; give data.input_shape=[C, H, W] of one image"
            )
        labels = [int(label), *_labels(dataset)]
        wrong = [v for v in labels if not 0 <= v < self.num_classes]
        if wrong:
            raise ValueError(f"data.num_classes={self.num_classes} but a {split} label of {self.target} is {wrong[0]}")


LABELS_READ = 64  # samples whose labels are read when a dataset keeps no list of them


def _labels(dataset: Dataset) -> list[int]:
    """The labels of ``dataset``, where it keeps them (ImageFolder's ``targets``, a TensorDataset's
    second tensor), else those of its first samples: a cheap check of ``num_classes``."""
    kept = getattr(dataset, "targets", None)
    if kept is None and isinstance(getattr(dataset, "tensors", None), tuple) and len(dataset.tensors) == 2:  # type: ignore[attr-defined]
        kept = dataset.tensors[1]  # type: ignore[attr-defined]
    if kept is not None:
        return [int(v) for v in torch.as_tensor(kept).flatten().tolist()]
    return [int(dataset[i][1]) for i in range(min(LABELS_READ, len(dataset)))]  # type: ignore[arg-type]


def _locate(target: str) -> Any:
    """The user's callable; a ValueError naming ``data._target_`` if it cannot be imported."""
    try:
        return locate(target)
    except ValueError as err:
        raise ValueError(f"data.{err}") from None


def build_python_data(cfg: dict[str, Any], loader_keys: list[str]) -> PythonDataModule:
    """The data module of a ``_target_`` data config: ``loader_keys`` (kdexp's own loader options)
    go to the loaders, ``num_classes``/``input_shape`` are checked, the rest go to the target."""
    missing = [k for k in ("name", *FACTS) if cfg.get(k) is None]
    if missing:
        raise ValueError(
            f"data._target_={cfg[TARGET]!r}: the data config needs {', '.join(f'data.{k}' for k in missing)} "
            "(name: <its name in results>, num_classes: <int>, input_shape: [C, H, W])"
        )
    shape = cfg["input_shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError(f"data.input_shape={shape!r} must be [channels, height, width] (three positive integers)")
    if not isinstance(cfg["num_classes"], int) or cfg["num_classes"] < 1:
        raise ValueError(f"data.num_classes={cfg['num_classes']!r} must be a positive integer")
    target = _locate(cfg[TARGET])
    options = {k: v for k, v in cfg.items() if k not in {TARGET, "name", *FACTS, *loader_keys}}
    accepted = accepted_keys(target)
    options |= {k: cfg[k] for k in FACTS if accepted is not None and k in accepted}  # a target may take them too
    unknown = sorted(set(options) - set(accepted)) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"data._target_={cfg[TARGET]!r} takes no argument {', '.join(unknown)} (data.{unknown[0]}); it accepts: "
            f"{', '.join(accepted) or 'none'}; kdexp's own data options: {', '.join(loader_keys)}"
        )
    loader = {k: v for k, v in cfg.items() if k in loader_keys}
    return PythonDataModule(cfg[TARGET], str(cfg["name"]), cfg["num_classes"], tuple(shape), options, **loader)
