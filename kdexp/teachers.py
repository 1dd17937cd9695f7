"""Teacher provisioning: load ``teacher.checkpoint``, or train the teacher once and cache it.

The cache key hashes everything that determines the trained weights — the teacher's model config,
the data config (minus loader settings), its training recipe and its seed — so later runs and
sweep jobs reuse one teacher. A file lock per key makes concurrent jobs wait for the one that
trains it instead of training it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
import torch

from kdexp.data import ImageDataModule
from kdexp.models import BuiltModel, build_model

log = logging.getLogger(__name__)

# Data settings that change how fast data loads, not what the teacher learns.
_LOADER_KEYS = {"num_workers", "pin_memory", "eval_batch_size", "root", "download", "download_dir"}
# Teacher settings that say where weights come from, not what they are.
_MODEL_SOURCE_KEYS = {"checkpoint", "train", "seed"}
# Prefixes that wrappers put on parameter names: Lightning modules, DDP, RepDistiller.
_PREFIXES = ("student.", "module.", "model.")


def teacher_cache_key(
    teacher_cfg: dict[str, Any], data_cfg: dict[str, Any], trainer_cfg: dict[str, Any] | None = None
) -> str:
    """A short, stable hash of (model config, data config, training recipe, seed).

    The recipe includes the numeric precision, which the teacher inherits from the run's
    ``trainer.precision`` unless its recipe sets one.
    """
    recipe = teacher_cfg.get("train", {})
    identity = {
        "model": {k: v for k, v in teacher_cfg.items() if k not in _MODEL_SOURCE_KEYS},
        "data": {k: v for k, v in data_cfg.items() if k not in _LOADER_KEYS},
        "recipe": recipe,
        "seed": teacher_cfg.get("seed", 0),
        "precision": str(recipe.get("precision", (trainer_cfg or {}).get("precision", "32-true"))),
    }
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The model weights inside a raw state_dict, a kdexp/Lightning or a RepDistiller checkpoint."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise ValueError("holds no state_dict (expected tensors under 'state_dict', 'model' or top level)")
    # A Lightning checkpoint of a distillation run also holds method modules (e.g. regressors).
    if any(k.startswith("student.") for k in checkpoint):
        checkpoint = {k: v for k, v in checkpoint.items() if k.startswith("student.")}
    for prefix in _PREFIXES:
        if checkpoint and all(k.startswith(prefix) for k in checkpoint):
            checkpoint = {k[len(prefix) :]: v for k, v in checkpoint.items()}
    return checkpoint


def unreadable_reason(path: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in words: not a torch file, truncated, or unsafe objects."""
    import pickle
    import re
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(2)
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # neither a zip archive nor a pickle
        return "it is not a file written by torch.save"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "the file is truncated or corrupt (an incomplete zip archive)"
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        found = re.search(r"GLOBAL (\S+)", str(err))
        return (
            "it holds Python objects other than tensors and plain containers, which current torch "
            "refuses to unpickle" + (f" (e.g. {found.group(1)})" if found else "")
        )
    return f"the file is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def load_weights(model: BuiltModel, path: str | Path, num_classes: int) -> None:
    """Load ``path`` into ``model``, failing with a clear message before any training starts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher.checkpoint={str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is reported in one sentence
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} cannot be read as a checkpoint: {unreadable_reason(path, err)}; expected "
            "a torch.save file of a state_dict, a Lightning checkpoint (weights under 'state_dict') "
            "or a RepDistiller checkpoint (under 'model')"
        ) from None
    try:
        state = extract_state_dict(checkpoint)
    except ValueError as err:
        raise ValueError(f"teacher.checkpoint={str(path)!r} {err}") from None
    head = state.get(f"{model.classifier}.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} predicts {head.shape[0]} classes but the data has "
            f"{num_classes}; use a teacher trained on this dataset"
        )
    expected = model.module.state_dict()
    problems = {
        "missing keys": [k for k in expected if k not in state],
        "unexpected keys": [k for k in state if k not in expected],
        "shape mismatches": [
            k for k in expected if k in state and state[k].shape != expected[k].shape
        ],
    }
    if any(problems.values()):
        listed = "; ".join(
            f"{kind} {keys[:4]}{' ...' if len(keys) > 4 else ''}" for kind, keys in problems.items() if keys
        )
        raise ValueError(
            f"teacher.checkpoint={str(path)!r} does not fit teacher.name={model.name!r}: {listed}"
        )
    model.module.load_state_dict(state)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (fcntl), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_teacher(
    teacher: BuiltModel,
    datamodule: ImageDataModule,
    recipe: dict[str, Any],
    trainer_cfg: dict[str, Any],
    log_dir: Path,
) -> dict[str, float]:
    """Train ``teacher`` alone (method vanilla) with ``recipe``; return its test metrics."""
    from kdexp.methods import VanillaModule  # the methods import losses; keep this module light

    recipe = dict(recipe)
    optimizer, scheduler = recipe.pop("optimizer"), recipe.pop("scheduler")
    module = VanillaModule(
        teacher,
        None,
        num_classes=datamodule.num_classes,
        input_shape=datamodule.input_shape,
        optimizer=optimizer,
        scheduler=scheduler,
    )
    kwargs = {k: v for k, v in trainer_cfg.items() if not k.startswith("_") and not k.startswith("limit_")}
    kwargs.update(recipe)
    # One device: DDP workers start when the student's fit starts and find this teacher cached.
    kwargs.update(devices=1, strategy="auto", enable_checkpointing=False, default_root_dir=str(log_dir))
    trainer = pl.Trainer(
        **kwargs,
        logger=pl.loggers.TensorBoardLogger(str(log_dir), name="", version="", default_hp_metric=False),
        callbacks=[pl.callbacks.RichProgressBar()],
    )
    trainer.fit(module, datamodule)
    (metrics,) = trainer.test(module, datamodule, verbose=False)
    return {k.replace("test/student_", "test_"): float(v) for k, v in metrics.items()}


def architecture_cfg(teacher_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config without pretrained weights: the architecture that a checkpoint fills."""
    return {**teacher_cfg, "weights": None, "pretrained": False}


def provide_teacher(
    architecture: BuiltModel,
    teacher_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    datamodule: ImageDataModule,
    trainer_cfg: dict[str, Any],
    cache_dir: str | Path,
    log_dir: str | Path,
) -> tuple[BuiltModel, dict[str, Any]]:
    """Return the teacher (frozen) and where it came from: checkpoint, cache or trained now.

    ``architecture`` (built from ``architecture_cfg``) receives checkpoint or cached weights; only
    training builds the model again from ``teacher_cfg``, with the teacher's seed and any
    pretrained initialisation.
    """
    teacher = architecture
    if teacher_cfg.get("checkpoint"):
        load_weights(teacher, teacher_cfg["checkpoint"], datamodule.num_classes)
        info = {"source": "checkpoint", "path": str(teacher_cfg["checkpoint"])}
    else:
        key = teacher_cache_key(teacher_cfg, data_cfg, trainer_cfg)
        path = Path(cache_dir) / f"{teacher_cfg['name']}-{key}.pt"
        with file_lock(path.with_suffix(".lock")):
            if path.is_file():
                log.info("Reusing cached teacher %s", path)
                info = {"source": "cache", "path": str(path)}
            else:
                log.info("Training teacher %s (cache key %s)", teacher_cfg["name"], key)
                pl.seed_everything(teacher_cfg.get("seed", 0), workers=True)
                teacher = build_model(teacher_cfg, datamodule.num_classes, datamodule.input_shape[0])
                metrics = train_teacher(
                    teacher, datamodule, teacher_cfg.get("train", {}), trainer_cfg, Path(log_dir)
                )
                tmp = path.with_suffix(".tmp")
                torch.save({"state_dict": teacher.module.state_dict(), "meta": metrics}, tmp)
                os.replace(tmp, path)  # atomic: a crash never leaves a half-written teacher
                info = {"source": "trained", "path": str(path), **metrics}
        load_weights(teacher, path, datamodule.num_classes)
    teacher.module.eval().requires_grad_(False)
    return teacher, info
