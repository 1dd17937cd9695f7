"""Every file kdexp writes goes through :func:`write_atomic`: a temporary file in the same folder,
fsync, rename (:func:`replace`, the only ``os.replace`` in kdexp), fsync of the folder, so a crash or
a full disk leaves the previous version or nothing, never a truncated file. torch objects are
serialized to bytes first (:func:`torch_bytes`), so that a write error names the file."""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def absolute(path: str | Path | None) -> str | None:
    """A path that still works from another working directory (None stays None)."""
    return str(Path(path).resolve()) if path else None


def replace(source: str | Path, target: str | Path) -> Path:
    """Rename ``source`` over ``target`` and make the rename survive a power cut."""
    os.replace(source, target)
    _fsync_folder(Path(target).parent)
    return Path(target)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically and durably.

    A write error (e.g. ENOSPC) is re-raised as an OSError naming ``path`` itself, not the
    temporary file, and the temporary file is removed.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        replace(tmp, path)
    except OSError as err:
        with_path = OSError(err.errno or errno.EIO, err.strerror or str(err), str(path))
        raise with_path from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _fsync_folder(folder: Path) -> None:
    """Best effort: not every file system can fsync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _number_or_text(value: Any) -> Any:
    """JSON for what json cannot write: numpy/torch scalars as floats, anything else (paths) as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """``obj`` as indented JSON, written atomically."""
    return write_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_number_or_text) + "\n")


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj)`` writes, in memory (its size is a model's storage size)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` through the atomic writer: a write error is an OSError naming ``path``."""
    return write_atomic(path, torch_bytes(obj))


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """An exclusive lock across processes on the file ``path`` (filelock: flock on POSIX, msvcrt
    on Windows), held for the ``with`` block."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield
