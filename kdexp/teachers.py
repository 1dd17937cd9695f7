"""Teacher provisioning: load ``teacher.checkpoint``, or train the teacher once and cache it.

The cache key hashes everything that determines the trained weights — the teacher's model config,
the data config (minus loader settings), its training recipe and its seed — so later runs and
sweep jobs reuse one teacher.

The cache is safe to share:
- Writes are atomic: the entry is written to a temporary file, flushed to disk and renamed over
  its final name (kdexp.tools.files), so a crash mid-write never leaves an entry that later runs trust;
  and verified: a new entry takes its name only after it loaded into a fresh architecture.
- Reads verify: an entry counts only if it loads, its weights match the digest stored beside them
  and they fit the architecture; anything else is set aside as ``*.corrupt-<time>`` and retrained.
- Concurrent jobs: a file lock per key makes jobs wait for the one that trains it.
- Under DDP only global rank 0 trains and writes; the other ranks wait for a valid entry and load
  it (rank 0 leaves a ``.failed`` note for its launch if training fails, so they stop waiting).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from kdexp.callbacks import EpochLogLines
from kdexp.data import ImageDataModule
from kdexp.distributed import discard_hpc_checkpoints, env_is_global_zero, launch_id
from kdexp.metric_names import metric_prefix
from kdexp.models import BuiltModel, architecture_cfg, build_model
from kdexp.tools.files import locked, replace, save_torch, write_atomic
from kdexp.tools.weights import load_weights, read_torch

log = logging.getLogger(__name__)

# Data settings that change how fast data loads, not what the teacher learns.
_LOADER_KEYS = {"num_workers", "pin_memory", "eval_batch_size", "root", "download", "download_dir"}
# Teacher settings that say where weights come from, not what they are.
_MODEL_SOURCE_KEYS = {"checkpoint", "train", "seed"}
# Run-level Trainer settings the teacher shares: how it computes, not what or how long it learns.
# Those that can change its weights are part of the cache key (see teacher_cache_key).
SHARED_TRAINER_KEYS = ("accelerator", "precision", "deterministic", "benchmark")
# Run-level debug switches. They reach the teacher (a debug run must stay quick), but a teacher
# trained under them is for that run only and is never cached.
DEBUG_TRAINER_KEYS = ("fast_dev_run", "overfit_batches")
# Run-level settings of the student's training that never reach the teacher (its recipe,
# ``teacher.train.*``, sets its own); named in the log when a run sets them.
_STUDENT_ONLY_DEFAULTS = {
    "limit_train_batches": (None, 1.0), "limit_val_batches": (None, 1.0), "limit_test_batches": (None, 1.0),
    "max_steps": (None, -1), "max_time": (None,), "min_epochs": (None,), "min_steps": (None,),
    "gradient_clip_val": (None, 0, 0.0), "accumulate_grad_batches": (None, 1),
    "val_check_interval": (None, 1.0), "check_val_every_n_epoch": (None, 1),
}
# How often ranks other than 0 look for the teacher that rank 0 trains, and how often they say so.
WAIT_POLL_S = 2.0
WAIT_LOG_S = 60.0


def teacher_cache_key(
    teacher_cfg: dict[str, Any], data_cfg: dict[str, Any], trainer_cfg: dict[str, Any] | None = None
) -> str:
    """A short, stable hash of (model config, data config, training recipe, seed, and the run's
    Trainer settings that reach the teacher and can change its weights).

    The recipe includes the numeric precision, which the teacher inherits from the run's
    ``trainer.precision`` unless its recipe sets one, and ``deterministic``/``benchmark`` when the
    run turns them on. The accelerator is left out: the same recipe on another device is the same
    teacher. Debug switches are not in the key because their teachers are never cached.
    """
    recipe = teacher_cfg.get("train", {})
    trainer_cfg = trainer_cfg or {}
    identity = {
        "model": {k: v for k, v in teacher_cfg.items() if k not in _MODEL_SOURCE_KEYS},
        "data": {k: v for k, v in data_cfg.items() if k not in _LOADER_KEYS},
        "recipe": recipe,
        "seed": teacher_cfg.get("seed", 0),
        "precision": str(recipe.get("precision", trainer_cfg.get("precision", "32-true"))),
    }
    # Only when turned on, so that keys of teachers cached before this was tracked stay valid.
    switches = {k: trainer_cfg[k] for k in ("deterministic", "benchmark") if trainer_cfg.get(k) and k not in recipe}
    if switches:
        identity["trainer"] = switches
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def debug_settings(trainer_cfg: dict[str, Any]) -> dict[str, Any]:
    """The run's debug switches that are on (``fast_dev_run``, ``overfit_batches``)."""
    return {k: trainer_cfg[k] for k in DEBUG_TRAINER_KEYS if trainer_cfg.get(k)}


def student_only_settings(trainer_cfg: dict[str, Any]) -> dict[str, Any]:
    """The run's Trainer settings, away from their defaults, that the teacher does not get."""
    return {
        k: trainer_cfg[k]
        for k, defaults in _STUDENT_ONLY_DEFAULTS.items()
        if k in trainer_cfg and trainer_cfg[k] not in defaults
    }


def teacher_trainer_kwargs(recipe: dict[str, Any], trainer_cfg: dict[str, Any]) -> dict[str, Any]:
    """The teacher's Trainer arguments: the run's shared settings and debug switches, then its
    recipe (minus optimizer and scheduler), which wins."""
    kwargs = {k: trainer_cfg[k] for k in SHARED_TRAINER_KEYS if trainer_cfg.get(k) is not None}
    kwargs.update(debug_settings(trainer_cfg))
    kwargs.update({k: v for k, v in recipe.items() if k not in ("optimizer", "scheduler")})
    return kwargs


def provenance(info: dict[str, Any]) -> str:
    """Where the teacher came from, in one line: "cache 95a9…, trained 4 epochs, test 93.05%"."""
    source = info.get("source")
    if source == "checkpoint":
        return f"checkpoint {info.get('path')}"
    if source not in ("cache", "trained"):
        return str(source or "none")
    parts = [f"cache {str(info.get('key', '?'))[:4]}…" if info.get("cached", True) else
             f"trained for this run only, not cached ({info.get('not_cached_because')})"]
    if source == "trained" and info.get("cached", True):
        parts[0] = f"trained now, cached as {str(info.get('key', '?'))[:4]}…"
    if info.get("epochs") is not None:
        epochs = f"{info['epochs']} epoch{'s' if info['epochs'] != 1 else ''}"
        parts.append(f"trained {epochs}" if source == "cache" else epochs)
    if info.get("test_acc") is not None:
        parts.append(f"test {100 * float(info['test_acc']):.2f}%")
    return ", ".join(parts)


class TeacherLogger(pl.loggers.TensorBoardLogger):
    """The teacher's own curves (run ``<run>/teacher``), named as the teacher's: the vanilla
    module that trains it logs ``test/student_acc``, which here is ``test/teacher_acc``."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({k.replace("student_", "teacher_"): v for k, v in metrics.items()}, step)


def train_teacher(
    teacher: BuiltModel,
    datamodule: ImageDataModule,
    recipe: dict[str, Any],
    trainer_cfg: dict[str, Any],
    log_dir: Path | None,
    callbacks: list[pl.Callback] | None = None,
) -> dict[str, float]:
    """Train ``teacher`` alone (method vanilla) with ``recipe``; return its test metrics. Its curves
    go to ``log_dir`` (TensorBoard), or nowhere when it is None (``logger=none``); ``callbacks``
    run too (e.g. kdexp.teacher_route keeps the checkpoints of chosen epochs)."""
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
    kwargs = teacher_trainer_kwargs(recipe, trainer_cfg)
    # One device on global rank 0: the other ranks wait for the cache entry (provide_teacher).
    kwargs.update(
        devices=1,
        num_nodes=1,
        strategy="auto",
        sync_batchnorm=False,
        enable_checkpointing=False,
        default_root_dir=str(log_dir) if log_dir else None,
    )
    from kdexp.tools.trainer import build_trainer

    trainer = build_trainer(
        kwargs,
        logger=TeacherLogger(str(log_dir), name="", version="", default_hp_metric=False) if log_dir else False,
        callbacks=[pl.callbacks.RichProgressBar(), EpochLogLines(label=f"teacher {teacher.name}"), *(callbacks or [])],
    )
    trainer.fit(module, datamodule)
    discard_hpc_checkpoints(trainer)  # else test() would load a SLURM requeue checkpoint
    epochs = trainer.current_epoch
    (metrics,) = trainer.test(module, datamodule, verbose=False)
    student = metric_prefix("test", "student")  # the teacher trains as the vanilla method's student
    return {"epochs": epochs, **{k.replace(student, "test_"): float(v) for k, v in metrics.items()}}


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state_dict``, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_entry(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a cache entry atomically (kdexp.tools.files.save_torch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch(path, {"state_dict": state_dict, "meta": meta, "sha256": state_digest(state_dict)})


def write_verified(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any], architecture: BuiltModel,
                   num_classes: int) -> None:
    """Write a cache entry only once it loads as later runs will load it: written (atomically)
    beside its name, loaded into ``architecture`` (a fresh one: later runs' architecture), then
    renamed to ``path``. One that does not load is deleted and raises: never an entry that every
    later run sets aside and trains again."""
    staged = path.with_name(f"{path.name}.unverified")
    write_entry(staged, state_dict, meta)
    problem = load_entry(architecture, staged, num_classes)
    if problem is not None:
        staged.unlink(missing_ok=True)
        raise RuntimeError(f"the teacher trained for {path} does not load back, so it was not cached: {problem}")
    replace(staged, path)  # a rename lost in a crash only means training again


def entry_problem(path: Path) -> str | None:
    """Why the cache entry at ``path`` cannot be trusted, or None when it is complete and intact."""
    try:
        blob = read_torch(path)
    except Exception as err:  # truncated, not a torch file, unreadable
        return f"unreadable ({type(err).__name__}: {str(err)[:200]})"
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        return "holds no state_dict"
    expected = blob.get("sha256")
    if expected is not None and expected != state_digest(blob["state_dict"]):
        return "its weights do not match their stored digest"
    return None  # entries from before digests were stored are trusted if they load


def load_entry(teacher: BuiltModel, path: Path, num_classes: int) -> str | None:
    """Load a verified cache entry into ``teacher``; return None, or why the entry was refused."""
    if not path.is_file():
        return "absent"
    problem = entry_problem(path)
    if problem is None:
        try:
            load_weights(teacher, path, num_classes)
        except (ValueError, FileNotFoundError) as err:
            problem = str(err)
    return problem


def _set_aside(path: Path, problem: str) -> None:
    corrupt = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    log.warning("Cached teacher %s cannot be used (%s): moved to %s, training it again", path, problem, corrupt)
    replace(path, corrupt)


def _failure_note(path: Path) -> Path:
    return path.with_name(path.name + ".failed")


def wait_for_entry(teacher: BuiltModel, path: Path, num_classes: int) -> None:
    """On a rank other than 0: wait until rank 0 has written a valid entry at ``path``; load it."""
    started, said, launch = time.monotonic(), time.monotonic(), launch_id()
    note = _failure_note(path)
    while load_entry(teacher, path, num_classes) is not None:
        if launch is not None and note.is_file():
            noted_launch, _, error = note.read_text().partition("\n")
            if noted_launch == launch:
                raise RuntimeError(f"rank 0 failed to train the teacher for {path}: {error}")
        if time.monotonic() - said >= WAIT_LOG_S:
            said = time.monotonic()
            log.info("Waiting %.0f s for rank 0 to train the teacher %s", said - started, path)
        time.sleep(WAIT_POLL_S)


def provide_teacher(
    architecture: BuiltModel,
    teacher_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    datamodule: ImageDataModule,
    trainer_cfg: dict[str, Any],
    cache_dir: str | Path,
    log_dir: str | Path | None,
) -> tuple[BuiltModel, dict[str, Any]]:
    """Return the teacher (frozen) and where it came from: checkpoint, cache or trained now.

    ``architecture`` (built from ``architecture_cfg``) receives checkpoint or cached weights; only
    training builds the model again from ``teacher_cfg``, with the teacher's seed and any
    pretrained initialisation. Only global rank 0 trains and writes (see the module notes).
    """
    from kdexp.checks import check_teacher_quantize

    check_teacher_quantize(teacher_cfg)  # before any training (the run checks it earlier still)
    teacher = architecture
    num_classes = datamodule.num_classes
    if teacher_cfg.get("checkpoint"):
        load_weights(teacher, teacher_cfg["checkpoint"], num_classes)
        info = {"source": "checkpoint", "path": str(teacher_cfg["checkpoint"])}
    elif debug_settings(trainer_cfg):
        teacher, info = _train_uncached(teacher_cfg, datamodule, trainer_cfg, log_dir)
    else:
        ignored = student_only_settings(trainer_cfg)
        if ignored:
            log.info(
                "The teacher trains by its recipe (teacher.train.*); the run's %s apply to the student only",
                ", ".join(f"trainer.{k}={v}" for k, v in ignored.items()),
            )
        key = teacher_cache_key(teacher_cfg, data_cfg, trainer_cfg)
        path = Path(cache_dir) / f"{teacher_cfg['name']}-{key}.pt"
        if not env_is_global_zero():
            wait_for_entry(teacher, path, num_classes)
            info = {"source": "cache", "path": str(path), "key": key, **entry_meta(path)}
        else:
            with locked(path.with_suffix(".lock")):  # other jobs sharing the cache wait here
                problem = load_entry(teacher, path, num_classes)
                if problem is None:
                    info = {"source": "cache", "path": str(path), "key": key, **entry_meta(path)}
                    log.info("Reusing cached teacher %s (%s)", path, provenance(info))
                else:
                    if problem != "absent":
                        _set_aside(path, problem)
                    teacher, info = _train_and_cache(teacher_cfg, datamodule, trainer_cfg, path, log_dir, key)
    teacher.module.eval().requires_grad_(False)
    info["summary"] = provenance(info)  # shown in the run's table; kept in results.json
    return teacher, info


def entry_meta(path: Path) -> dict[str, Any]:
    """What a cache entry records about its training (epochs, test metrics); {} if nothing."""
    try:
        meta = read_torch(path).get("meta", {})
    except Exception:  # noqa: BLE001 - provenance is informative; the weights were verified already
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, (int, float, str))}


def _train_uncached(
    teacher_cfg: dict[str, Any], datamodule: ImageDataModule, trainer_cfg: dict[str, Any], log_dir: str | Path
) -> tuple[BuiltModel, dict[str, Any]]:
    """Train a teacher under the run's debug switches, for this run only: never cached."""
    because = ", ".join(f"trainer.{k}={v}" for k, v in debug_settings(trainer_cfg).items())
    log.warning(
        "Training teacher %s with %s for this run only: it is not cached, and its accuracy says nothing "
        "about the recipe (teacher.train.*)", teacher_cfg["name"], because,
    )
    pl.seed_everything(teacher_cfg.get("seed", 0), workers=True)
    teacher = build_model(teacher_cfg, datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
    metrics = train_teacher(teacher, datamodule, teacher_cfg.get("train", {}), trainer_cfg, Path(log_dir) if log_dir else None)
    return teacher, {"source": "trained", "cached": False, "not_cached_because": because, **metrics}


def _train_and_cache(
    teacher_cfg: dict[str, Any],
    datamodule: ImageDataModule,
    trainer_cfg: dict[str, Any],
    path: Path,
    log_dir: str | Path,
    key: str,
    callbacks: list[pl.Callback] | None = None,
) -> tuple[BuiltModel, dict[str, Any]]:
    """Train the teacher (rank 0, under the lock), write its entry atomically and return it."""
    note = _failure_note(path)
    note.unlink(missing_ok=True)
    log.info("Training teacher %s (cache key %s)", teacher_cfg["name"], key)
    try:
        pl.seed_everything(teacher_cfg.get("seed", 0), workers=True)
        teacher = build_model(teacher_cfg, datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
        extra = {"callbacks": callbacks} if callbacks else {}  # e.g. kdexp.teacher_route's recorder
        metrics = train_teacher(
            teacher, datamodule, teacher_cfg.get("train", {}), trainer_cfg, Path(log_dir) if log_dir else None, **extra
        )
        # What later runs will load, and what this run uses: the entry read back into a fresh architecture.
        loaded = build_model(architecture_cfg(teacher_cfg), datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
        write_verified(path, teacher.module.state_dict(), metrics, loaded, datamodule.num_classes)
    except BaseException as err:
        launch = launch_id()
        if launch is not None:  # tell this launch's other ranks to stop waiting
            write_atomic(note, f"{launch}\n{type(err).__name__}: {err}")
        raise
    return loaded, {"source": "trained", "path": str(path), "key": key, **metrics}
