"""A run folder belongs to one live run: an exclusive lock on ``<folder>/.hydra/kdexp.lock``.

Taken by a Hydra callback before Hydra writes anything into the folder (``.hydra/*.yaml``, the job
log), held until the process ends (the operating system releases it when the process dies, even
on SIGKILL, so a crashed run never blocks its resume). A second run started on a folder that a live
run holds stops at once with exit 2 and touches nothing. Only the launching process (global rank 0)
locks: Lightning's ``ddp`` launcher re-runs the command for the other ranks with the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdexp.tools.files import write_atomic

LOCK_NAME = Path(".hydra") / "kdexp.lock"
_held: list[Any] = []  # the locks this process holds, kept alive until it exits


class FolderInUse(Exception):
    """Another live process holds the run folder's lock."""


def lock_run_folder(folder: str | Path, key: str = "hydra.run.dir") -> None:
    """Take ``folder``'s lock for the rest of this process, or raise a SetupError naming ``key``."""
    from filelock import FileLock, Timeout

    from kdexp.distributed import env_is_global_zero
    from kdexp.errors import SetupError

    if not env_is_global_zero():
        return
    path = Path(folder).absolute() / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise SetupError(
            f"{key}={str(folder)!r} is in use by another run that is still going"
            + (f" ({holder})" if holder else "")
            + "; a run folder belongs to one run at a time. Wait for it to finish, or give this run "
            f"its own folder ({key}=<another folder>, or leave {key} unset for a new one)"
        ) from None
    _record_holder(path)
    _held.append(lock)


def _record_holder(path: Path) -> None:
    info = path.with_suffix(".owner")
    try:
        write_atomic(info, f"pid {os.getpid()} on {os.uname().nodename}\n")
    except OSError:
        pass


def _holder(path: Path) -> str:
    try:
        return path.with_suffix(".owner").read_text().strip()
    except OSError:
        return ""


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency
    _HydraCallback = object  # type: ignore[assignment,misc]


class RunFolderLock(_HydraCallback):  # type: ignore[misc,valid-type]
    """Lock ``hydra.run.dir`` (a single run) or ``hydra.sweep.dir`` (a sweep) before Hydra writes to it."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from kdexp.callbacks import unwritable_reason
        from kdexp.errors import KdexpError, exit_with

        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve
        folder = OmegaConf.select(config, "hydra.run.dir")
        if not folder or unwritable_reason(folder):  # OutputDirCheck reports unwritable folders
            return
        try:
            lock_run_folder(folder)
        except KdexpError as err:
            exit_with(err)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from kdexp.callbacks import unwritable_reason
        from kdexp.errors import KdexpError, exit_with

        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        folder = OmegaConf.select(config, "hydra.sweep.dir")
        if not folder or unwritable_reason(folder):
            return
        try:
            lock_run_folder(folder, key="hydra.sweep.dir")
        except KdexpError as err:
            exit_with(err)
