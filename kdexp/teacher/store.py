"""One keyed store for everything kdexp keeps about a teacher: identity → key → path.

A key is ``key_of(identity)``: 16 hex digits of a SHA-256 over the identity's JSON (sorted keys),
the same for the teacher cache entries (``<name>-<key>.pt``), their route files, the teacher's
stored test logits (``teacher_test_logits/<key>.pt``) and training logits
(``teacher_train_logits/<key>.pt``), so entries written before this module keep their names.

Every write is atomic (kdexp.tools.files) and records the key it is stored under (the file's name
without ``.pt``) and a digest of any ``state_dict``; with ``verify``, a new file takes its name
only after it loaded back. Every read checks what was written: readable, the digest, and (where
``require_key``) the recorded key, so a file copied or swapped by hand is never served. Writers
hold a file lock per entry; under DDP, ranks other than 0 wait for rank 0's entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from kdexp.distributed import launch_id
from kdexp.tools.files import locked, replace, save_torch, write_atomic
from kdexp.tools.weights import read_torch

log = logging.getLogger("kdexp")

# How often ranks other than 0 look for the entry that rank 0 writes, and how often they say so.
WAIT_POLL_S = 2.0
WAIT_LOG_S = 60.0


def key_of(identity: dict[str, Any]) -> str:
    """A short, stable hash of ``identity`` (its JSON with sorted keys; other values as text)."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state_dict``, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class Store:
    """Files under ``folder`` named by their key; ``what`` names them in messages. With
    ``require_key`` a file must record the key it is looked up by (teacher entries written before
    keys were recorded are trusted when they load and match their digest)."""

    def __init__(self, folder: str | Path, what: str, require_key: bool = True) -> None:
        self.folder, self.what, self.require_key = Path(folder), what, require_key

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def locked(self, path: Path) -> ContextManager[None]:
        """The lock every writer of ``path`` (and its files beside it) holds."""
        return locked(path.with_suffix(".lock"))

    def save(self, path: Path, payload: dict[str, Any], verify: Callable[[Path], str | None] | None = None) -> None:
        """Write ``payload`` atomically, recording its key and its state_dict's digest. With
        ``verify`` (a reader returning why the file cannot be used, or None) the file is staged
        beside ``path`` and named only once it reads back; else the staged file is deleted and
        this raises."""
        blob = {**payload, "key": key_in(path)}
        if isinstance(payload.get("state_dict"), dict):
            blob["sha256"] = state_digest(payload["state_dict"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if verify is None:
            save_torch(path, blob)
            return
        staged = path.with_name(f"{path.name}.unverified")
        save_torch(staged, blob)
        problem = verify(staged)
        if problem is not None:
            staged.unlink(missing_ok=True)
            raise RuntimeError(f"the {self.what} trained for {path} does not load back, so it was not cached: {problem}")
        replace(staged, path)  # a rename lost in a crash only means computing it again

    def load(self, path: Path) -> tuple[Any, str | None]:
        """(content, None), or (None, why the file cannot be trusted: "absent", unreadable, ...)."""
        if not path.is_file():
            return None, "absent"
        try:
            blob = read_torch(path)
        except Exception as err:  # noqa: BLE001 - truncated, not a torch file, unreadable
            return None, f"unreadable ({type(err).__name__}: {str(err)[:200]})"
        if not isinstance(blob, dict):
            return None, "holds no entry"
        recorded, key = blob.get("key"), key_in(path)
        if (self.require_key or recorded is not None) and recorded != key:
            return None, f"records the key {recorded!r}, not {key!r} (copied or swapped by hand?)"
        state = blob.get("state_dict")
        if state is not None and blob.get("sha256") is not None and blob["sha256"] != state_digest(state):
            return None, "its weights do not match their stored digest"
        return blob, None

    def get(self, path: Path) -> Any:
        """The content at ``path`` when it can be trusted, else None (to be computed again and
        replaced; a file that is there but cannot be used is named in a warning)."""
        blob, problem = self.load(path)
        if problem is not None and problem != "absent":
            log.warning("Stored %s %s %s: not served, computing them again", self.what, path, problem)
        return blob

    def set_aside(self, path: Path, problem: str) -> Path:
        """Move an entry that cannot be used to ``*.corrupt-<time>``, beside it."""
        corrupt = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("Stored %s %s cannot be used (%s): moved to %s, computing it again", self.what, path, problem, corrupt)
        return replace(path, corrupt)

    def note_failure(self, path: Path, err: BaseException) -> None:
        """Tell this launch's other ranks, waiting for ``path``, that rank 0 failed to write it."""
        launch = launch_id()
        if launch is not None:
            write_atomic(_failure_note(path), f"{launch}\n{type(err).__name__}: {err}")

    def clear_failure(self, path: Path) -> None:
        _failure_note(path).unlink(missing_ok=True)

    def wait_for(self, path: Path, ready: Callable[[], bool]) -> None:
        """On a rank other than 0: wait until ``ready()`` (rank 0 has written ``path``), or raise
        when rank 0 noted that this launch failed to write it."""
        started, said, launch = time.monotonic(), time.monotonic(), launch_id()
        note = _failure_note(path)
        while not ready():
            if launch is not None and note.is_file():
                noted_launch, _, error = note.read_text().partition("\n")
                if noted_launch == launch:
                    raise RuntimeError(f"rank 0 failed to train the {self.what} for {path}: {error}")
            if time.monotonic() - said >= WAIT_LOG_S:
                said = time.monotonic()
                log.info("Waiting %.0f s for rank 0 to write the %s %s", said - started, self.what, path)
            time.sleep(WAIT_POLL_S)


def key_in(path: Path) -> str:
    """The key a file is stored under: its name without ``.pt`` (a staged ``.pt.unverified`` too)."""
    return Path(path.name.removesuffix(".unverified")).stem


def _failure_note(path: Path) -> Path:
    return path.with_name(path.name + ".failed")
