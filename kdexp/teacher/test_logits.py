"""The teacher's test-set logits, computed once per teacher and test set, then reused by every run.

Test data has no augmentation, so once a teacher has been through the test set its logits there
never change: later runs (every job of a sweep, every seed) test only the student and read the
teacher's accuracy and the top-1 agreement from the stored logits. The store is filled by the
first run's own test pass — the same loader, batches, device and precision — so the numbers are
exactly those that running the teacher gives. Keyed by the teacher's weights (a SHA-256), the test
set's config and content (``data_fingerprint``: another folder of the same size is another key), the
evaluation batch size, the device type and the precision; written atomically.

Every stored teacher output (these test logits and kdexp.teacher.outputs' training logits) records
the key it was stored under, and is served only when that is the key it is looked up by: a file
copied or swapped by hand is named in a warning and computed again (kdexp.teacher.store).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from kdexp.data import data_identity
from kdexp.teacher.store import Store, key_of, state_digest

log = logging.getLogger("kdexp")

# Data settings that do not change what the test set holds.
_LOADER_KEYS = {"num_workers", "pin_memory", "root", "download", "download_dir", "batch_size"}


def data_fingerprint(dataset: Any) -> str:
    """A short hash of what ``dataset`` holds, cheap enough for every run: the bytes of in-memory
    images and labels (the tensor data path: SHA-256 at ≈ 2 GB/s, 0.1 s for CIFAR's training set),
    the resolved path, size and modification time of each file of a folder dataset (``samples``),
    and the rows a ``Subset`` takes; for anything else its type and length (FakeData is a function
    of its config, which the keys hold too)."""
    digest = hashlib.sha256()
    _feed(digest, dataset)
    return digest.hexdigest()[:16]


def _feed(digest: Any, dataset: Any) -> None:
    from torch.utils.data import Subset

    from kdexp.data.base import WithIndex
    from kdexp.data.tensor import ImageTensors

    digest.update(f"{type(dataset).__qualname__}|{len(dataset)}|".encode())
    if isinstance(dataset, (Subset, WithIndex)):
        if isinstance(dataset, Subset):
            digest.update(torch.as_tensor(list(dataset.indices), dtype=torch.int64).numpy().tobytes())
        _feed(digest, dataset.dataset)
    elif isinstance(getattr(dataset, "data", None), ImageTensors):
        for tensor in (dataset.data.images, dataset.data.labels):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy() if tensor.numel() else b"")
    elif isinstance(getattr(dataset, "samples", None), list):  # torchvision's ImageFolder / DatasetFolder
        for path, target in dataset.samples:
            stat = os.stat(path)
            digest.update(f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{target}\n".encode())


def store_key(teacher_digest: str, data_cfg: dict[str, Any], device: str, precision: str) -> str:
    """A short hash of everything the stored logits depend on (``eval_batch_size`` included: it
    decides the batches the logits were computed in)."""
    identity = {
        "teacher": teacher_digest,
        "data": {k: v for k, v in data_identity(data_cfg).items() if k not in _LOADER_KEYS},
        "device": device,
        "precision": precision,
    }
    return key_of(identity)


class TeacherTestLogits:
    """The teacher's logits on the ``size`` test samples, for the teacher it is bound to at the
    start of a test pass (``bind``: a method may change its teacher during training): loaded from
    the store, or filled by that test pass (``logits_for``) and saved once every sample was seen."""

    def __init__(self, folder: Path, key_parts: dict[str, Any], size: int, num_classes: int) -> None:
        self.folder, self.key_parts, self.shape = folder, key_parts, (size, num_classes)
        self.store = Store(folder, "test logits of the teacher")
        self.path: Path | None = None
        self.logits, self.complete = torch.zeros(self.shape), False
        self.seen = torch.zeros(size, dtype=torch.bool)

    def bind(self, teacher: torch.nn.Module) -> None:
        """Point the store at ``teacher``'s entry (keyed by a SHA-256 of its weights)."""
        self.path = self.folder / f"{store_key(state_digest(teacher.state_dict()), **self.key_parts)}.pt"
        loaded = self._load(*self.shape)
        self.complete = loaded is not None
        self.logits = loaded if loaded is not None else torch.zeros(self.shape)
        self.seen = torch.zeros(self.shape[0], dtype=torch.bool)

    def _load(self, size: int, num_classes: int) -> Tensor | None:
        stored = self.store.get(self.path) if self.path is not None else None
        logits = stored.get("logits") if stored is not None else None
        return logits if isinstance(logits, Tensor) and logits.shape == (size, num_classes) else None

    def logits_for(self, index: Tensor, x: Tensor, forward: Callable[[Tensor], Tensor]) -> Tensor:
        """The teacher's logits for the test samples ``index`` (the batch ``x``)."""
        rows = index.cpu()
        if self.complete:
            return self.logits[rows].to(x.device)
        out = forward(x)
        self.logits[rows] = out.detach().float().cpu()
        self.seen[rows] = True
        return out

    def save_if_filled(self) -> bool:
        """Write the store once a test pass has covered every sample; True when it did."""
        if self.complete or self.path is None or not bool(self.seen.all()):
            return False
        self.store.save(self.path, {"logits": self.logits})
        self.complete = True
        log.info("Stored the teacher's test logits for later runs: %s", self.path)
        return True


def attach_teacher_test_logits(module: Any, datamodule: Any, cache_dir: str | Path, data_cfg: dict[str, Any],
                               device: str, precision: str) -> TeacherTestLogits | None:
    """Give ``module`` the store for its teacher, and make the test batches carry sample indices.

    Only for a teacher with weights of its own (cached, trained or from a checkpoint) and a module
    that tests through the base ``test_step``; else None (the teacher runs in the test pass)."""
    from kdexp.methods.base import DistillationModule

    if module.teacher is None or type(module).test_step is not DistillationModule.test_step:
        return None
    test_set = datamodule.test_set
    if test_set is None:
        return None
    data = {**data_identity(data_cfg), "split": "test", "content": data_fingerprint(test_set)}  # the files, not only the config
    key_parts = {"data_cfg": data, "device": device, "precision": precision}
    store = TeacherTestLogits(Path(cache_dir) / "teacher_test_logits", key_parts, len(test_set), datamodule.num_classes)
    module.teacher_test_logits = store
    datamodule.index_test = True
    return store
