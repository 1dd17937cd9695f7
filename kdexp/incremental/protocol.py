"""The class-incremental protocol: a data set's classes split into ``incremental.tasks`` steps.

Step k trains on the training images of its own classes only (plus, for methods with a memory,
the stored exemplars; ``joint`` on every class seen so far) and is evaluated on the test images of
all classes seen so far. Labels are renamed to their position in the class order, so the head of
step k has one output per class seen so far, old classes first: position ``p`` is class
``order[p]``, and step k's classes are positions ``[start_k, end_k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from kdexp.data import DATASETS, ImageDataModule

# The options of the ``incremental`` config node, and what each one is.
OPTIONS = {
    "tasks": "how many steps the classes are split into",
    "class_order": "an explicit class order (a permutation of 0..C-1), or null for a seeded shuffle",
    "class_order_seed": "the seed of the shuffled class order (1993: the CIFAR-100 order of iCaRL and the benchmarks since, 68, 56, 78, ...)",
    "memory": "the exemplar memory's total size, in images, for methods that keep one (icarl)",
}


@dataclass(frozen=True)
class ClassSplit:
    """The class order and where each step's classes start in it."""

    order: tuple[int, ...]  # order[p] = the original label of position p
    bounds: tuple[int, ...]  # step k (0-based) holds positions bounds[k] .. bounds[k+1]-1

    @property
    def tasks(self) -> int:
        return len(self.bounds) - 1

    @property
    def num_classes(self) -> int:
        return len(self.order)

    def classes(self, step: int) -> list[int]:
        """The original labels of step ``step`` (0-based)."""
        return list(self.order[self.bounds[step] : self.bounds[step + 1]])

    def seen(self, step: int) -> int:
        """How many classes the model knows after step ``step`` (0-based)."""
        return self.bounds[step + 1]

    def label_map(self) -> Tensor:
        """original label → position in the class order (int64, length C)."""
        positions = torch.empty(self.num_classes, dtype=torch.int64)
        positions[list(self.order)] = torch.arange(self.num_classes)
        return positions

    def task_of_position(self) -> Tensor:
        """position → the (0-based) step that introduced it."""
        return torch.repeat_interleave(
            torch.arange(self.tasks), torch.tensor([b - a for a, b in zip(self.bounds, self.bounds[1:])])
        )


def expected_num_classes(data_cfg: dict[str, Any]) -> int | None:
    """The data set's class count from its config alone (None where only the files know it)."""
    if isinstance(data_cfg.get("num_classes"), int):
        return int(data_cfg["num_classes"])
    name = str(data_cfg.get("name"))
    cls = DATASETS.get(name) if name in DATASETS else None
    value = getattr(cls, "num_classes", None) if cls is not None else None
    return value if isinstance(value, int) else None


def _integer(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"incremental.{key} must be an integer >= {minimum} ({OPTIONS[key]}), got {value!r}")
    return value


def check_incremental_cfg(inc: dict[str, Any], num_classes: int | None, uses_memory: bool) -> None:
    """Bad input, before any data is loaded or any step trained: unknown keys, more tasks than
    classes, a class order that is not a permutation, a memory smaller than one exemplar per class."""
    unknown = sorted(set(inc) - set(OPTIONS))
    if unknown:
        raise ValueError(f"incremental has no option(s) {unknown}; allowed: {list(OPTIONS)}")
    tasks = _integer("tasks", inc.get("tasks"), 1)
    _integer("class_order_seed", inc.get("class_order_seed", 0), 0)
    memory = _integer("memory", inc.get("memory", 0), 0)
    order = inc.get("class_order")
    if order is not None:
        if isinstance(order, str) or not isinstance(order, (list, tuple)):
            raise ValueError(f"incremental.class_order must be a list of class labels or null, got {order!r}")
        if num_classes is None:
            num_classes = len(order)
        bad = [c for c in order if isinstance(c, bool) or not isinstance(c, int)]
        if bad or sorted(order) != list(range(num_classes)):
            missing = sorted(set(range(num_classes)) - set(order))
            repeated = sorted({c for c in order if list(order).count(c) > 1})
            outside = sorted({c for c in order if c not in range(num_classes)}, key=str)
            raise ValueError(
                f"incremental.class_order must be a permutation of 0..{num_classes - 1} (every class "
                f"exactly once); got {len(order)} entries, missing {missing}, repeated {repeated}, "
                f"not a class label {outside}"
            )
    if num_classes is None:
        return
    if tasks > num_classes:
        raise ValueError(
            f"incremental.tasks={tasks} is more than the {num_classes} classes of the data set: "
            f"each step needs at least one new class; choose 1..{num_classes}"
        )
    if tasks == num_classes > 1:
        raise ValueError(
            f"incremental.tasks={tasks} gives each step a single class of the {num_classes}, so step 1's "
            "head has one output: cross-entropy over one class is 0 and nothing can be learned or "
            f"measured; choose incremental.tasks from 1 to {num_classes - 1} (step 1 then has at least 2 classes)"
        )
    if uses_memory and memory < num_classes:
        raise ValueError(
            f"incremental.memory={memory} is smaller than one exemplar per class ({num_classes} "
            f"classes); give at least {num_classes} (iCaRL's CIFAR-100 setting is 2000)"
        )


def class_split(inc: dict[str, Any], num_classes: int) -> ClassSplit:
    """The class order (explicit, or ``RandomState(class_order_seed).permutation(C)`` like
    iCaRL's code) cut into ``tasks`` steps of C // tasks classes (the first C % tasks get one more)."""
    tasks = int(inc["tasks"])
    order = inc.get("class_order")
    if order is None:
        order = np.random.RandomState(int(inc.get("class_order_seed", 0))).permutation(num_classes).tolist()
    sizes = [num_classes // tasks + (1 if k < num_classes % tasks else 0) for k in range(tasks)]
    return ClassSplit(tuple(int(c) for c in order), tuple(int(b) for b in np.cumsum([0, *sizes])))


def dataset_labels(dataset: Dataset) -> Tensor:
    """Every sample's label (int64), read without decoding images where the data set allows."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    labels = getattr(getattr(dataset, "data", None), "labels", None)  # kdexp's tensor data sets
    if isinstance(labels, Tensor):
        return labels.cpu().to(torch.int64)
    targets = getattr(dataset, "targets", None)  # torchvision folders and CIFAR
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.int64)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


class ClassSubset(Dataset):
    """The samples of ``dataset`` at ``indices``, each label renamed by ``label_map``."""

    def __init__(self, dataset: Dataset, indices: Tensor, label_map: Tensor) -> None:
        self.dataset, self.indices, self.label_map = dataset, indices.tolist(), label_map

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x, y = self.dataset[self.indices[i]][:2]
        return x, int(self.label_map[int(y)])


class StepDataModule(ImageDataModule):
    """One step's data: ``train`` for training, ``val`` and ``test`` for evaluation, labels
    renamed to positions; batching and the per-epoch order are those of the base data module."""

    def __init__(self, base: ImageDataModule, seen: int, train: Dataset, val: Dataset, test: Dataset) -> None:
        super().__init__(
            batch_size=base.batch_size,
            eval_batch_size=base.eval_batch_size,
            num_workers=base.num_workers,
            pin_memory=base.pin_memory,
        )
        self.name, self.input_shape, self.num_classes = base.name, base.input_shape, seen
        self.train_set, self.val_set, self.test_set = train, val, test

    def setup(self, stage: str | None = None) -> None:  # the subsets are given
        pass


class IncrementalData:
    """A set-up data module cut by a :class:`ClassSplit`; labels are read once."""

    def __init__(self, base: ImageDataModule, split: ClassSplit) -> None:
        self.base, self.split, self.label_map = base, split, split.label_map()
        self.train_labels = dataset_labels(base.train_set)
        self.test_labels = dataset_labels(base.test_set)
        same = base.val_set is base.test_set
        self.val_labels = self.test_labels if same else dataset_labels(base.val_set)

    def class_indices(self, label: int) -> Tensor:
        """Indices into ``base.train_set`` of the training samples of original class ``label``."""
        return torch.nonzero(self.train_labels == label).flatten()

    def train_indices(self, step: int, joint: bool = False) -> Tensor:
        """Training samples of step ``step``'s classes (``joint``: of every class seen so far)."""
        positions = self.label_map[self.train_labels]
        low = 0 if joint else self.split.bounds[step]
        return torch.nonzero((positions >= low) & (positions < self.split.seen(step))).flatten()

    def subset(self, which: str, indices: Tensor) -> ClassSubset:
        return ClassSubset(getattr(self.base, f"{which}_set"), indices, self.label_map)

    def seen_subset(self, which: str, step: int) -> ClassSubset:
        """The ``val`` or ``test`` samples of every class seen up to step ``step``."""
        labels = self.val_labels if which == "val" else self.test_labels
        return self.subset(which, torch.nonzero(self.label_map[labels] < self.split.seen(step)).flatten())

    def step(self, step: int, exemplars: Tensor | None = None, joint: bool = False) -> StepDataModule:
        """Step ``step``'s data module; ``exemplars`` (train-set indices) join its training data."""
        train = self.train_indices(step, joint)
        if exemplars is not None and len(exemplars):
            train = torch.cat([train, exemplars.to(torch.int64)])
        return StepDataModule(
            self.base,
            self.split.seen(step),
            self.subset("train", train),
            self.seen_subset("val", step),
            self.seen_subset("test", step),
        )
