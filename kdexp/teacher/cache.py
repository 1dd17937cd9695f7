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

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from kdexp.callbacks import EpochLogLines
from kdexp.data import ImageDataModule, data_identity
from kdexp.distributed import discard_hpc_checkpoints, env_is_global_zero
from kdexp.metric_names import metric_prefix
from kdexp.models import BuiltModel, architecture_cfg, build_model
from kdexp.teacher.store import Store, key_of
from kdexp.tools.weights import load_weights

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
        "data": {k: v for k, v in data_identity(data_cfg).items() if k not in _LOADER_KEYS},
        "recipe": recipe,
        "seed": teacher_cfg.get("seed", 0),
        "precision": str(recipe.get("precision", trainer_cfg.get("precision", "32-true"))),
    }
    # Only when turned on, so that keys of teachers cached before this was tracked stay valid.
    switches = {k: trainer_cfg[k] for k in ("deterministic", "benchmark") if trainer_cfg.get(k) and k not in recipe}
    if switches:
        identity["trainer"] = switches
    return key_of(identity)


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
    run too (e.g. kdexp.teacher.route keeps the checkpoints of chosen epochs)."""
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


def entries(path: Path) -> Store:
    """The store of teacher entries beside ``path`` (entries from before keys were recorded load too)."""
    return Store(path.parent, "teacher", require_key=False)


def write_entry(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write a cache entry atomically, with its weights' digest."""
    entries(path).save(path, {"state_dict": state_dict, "meta": meta})


def write_verified(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any], architecture: BuiltModel,
                   num_classes: int) -> None:
    """Write a cache entry only once it loads as later runs will load it (into ``architecture``, a
    fresh one: later runs' architecture). One that does not load is deleted and raises: never an
    entry that every later run sets aside and trains again."""
    entries(path).save(path, {"state_dict": state_dict, "meta": meta},
                       verify=lambda staged: load_entry(architecture, staged, num_classes))


def entry_problem(path: Path) -> str | None:
    """Why the cache entry at ``path`` cannot be trusted, or None when it is complete and intact."""
    blob, problem = entries(path).load(path)
    if problem is None and not isinstance(blob.get("state_dict"), dict):
        return "holds no state_dict"
    return problem  # entries from before digests were stored are trusted if they load


def load_entry(teacher: BuiltModel, path: Path, num_classes: int) -> str | None:
    """Load a verified cache entry into ``teacher``; return None, or why the entry was refused."""
    problem = entry_problem(path)
    if problem is None:
        try:
            load_weights(teacher, path, num_classes)
        except (ValueError, FileNotFoundError) as err:
            problem = str(err)
    return problem


def wait_for_entry(teacher: BuiltModel, path: Path, num_classes: int) -> None:
    """On a rank other than 0: wait until rank 0 has written a valid entry at ``path``; load it."""
    entries(path).wait_for(path, lambda: load_entry(teacher, path, num_classes) is None)


@dataclass(frozen=True)
class TeacherRequest:
    """What a run asks of its teacher: the architecture to fill, the plain ``teacher``, ``data`` and
    ``trainer`` config sections, the data module, where the cache and the teacher's logs go, and
    (where the method needs them) the epochs of its training route or a teacher it trains itself."""

    architecture: BuiltModel
    teacher: dict[str, Any]
    data: dict[str, Any]
    datamodule: ImageDataModule
    trainer: dict[str, Any]
    cache_dir: str | Path
    log_dir: str | Path | None = None
    route_epochs: list[int] | None = None
    trainable: bool = False
    method: str = ""

    def entry(self) -> tuple[str, Path]:
        """The teacher's cache key and its entry's path."""
        key = teacher_cache_key(self.teacher, self.data, self.trainer)
        return key, Path(self.cache_dir) / f"{self.teacher['name']}-{key}.pt"


def provide_teacher(request: TeacherRequest) -> tuple[BuiltModel, dict[str, Any]]:
    """Return the teacher (frozen) and where it came from: checkpoint, cache or trained now.

    ``request.architecture`` (built from ``architecture_cfg``) receives checkpoint or cached
    weights; only training builds the model again from the teacher config, with the teacher's seed
    and any pretrained initialisation. Only global rank 0 trains and writes (see the module notes).
    """
    from kdexp.checks import check_teacher_quantize

    architecture, teacher_cfg, datamodule, trainer_cfg = request.architecture, request.teacher, request.datamodule, request.trainer
    log_dir = request.log_dir
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
        key, path = request.entry()
        if not env_is_global_zero():
            wait_for_entry(teacher, path, num_classes)
            info = {"source": "cache", "path": str(path), "key": key, **entry_meta(path)}
        else:
            with entries(path).locked(path):  # other jobs sharing the cache wait here
                problem = load_entry(teacher, path, num_classes)
                if problem is None:
                    info = {"source": "cache", "path": str(path), "key": key, **entry_meta(path)}
                    log.info("Reusing cached teacher %s (%s)", path, provenance(info))
                else:
                    if problem != "absent":
                        entries(path).set_aside(path, problem)
                    teacher, info = train_and_store(request, path, key)
    teacher.module.eval().requires_grad_(False)
    info["summary"] = provenance(info)  # shown in the run's table; kept in results.json
    return teacher, info


def entry_meta(path: Path) -> dict[str, Any]:
    """What a cache entry records about its training (epochs, test metrics); {} if nothing."""
    blob, _ = entries(path).load(path)  # provenance is informative; the weights were verified already
    meta = (blob or {}).get("meta") or {}
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


def train_and_store(
    request: TeacherRequest, path: Path, key: str, callbacks: list[pl.Callback] | None = None
) -> tuple[BuiltModel, dict[str, Any]]:
    """Train the teacher (rank 0, under the entry's lock), write its entry at ``path`` (verified)
    and return it; ``callbacks`` run while it trains (kdexp.teacher.route records its route)."""
    teacher_cfg, datamodule, trainer_cfg, log_dir = request.teacher, request.datamodule, request.trainer, request.log_dir
    entries(path).clear_failure(path)
    log.info("Training teacher %s (cache key %s)", teacher_cfg["name"], key)
    try:
        pl.seed_everything(teacher_cfg.get("seed", 0), workers=True)
        teacher = build_model(teacher_cfg, datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
        extra = {"callbacks": callbacks} if callbacks else {}
        metrics = train_teacher(
            teacher, datamodule, teacher_cfg.get("train", {}), trainer_cfg, Path(log_dir) if log_dir else None, **extra
        )
        # What later runs will load, and what this run uses: the entry read back into a fresh architecture.
        loaded = build_model(architecture_cfg(teacher_cfg), datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
        write_verified(path, teacher.module.state_dict(), metrics, loaded, datamodule.num_classes)
    except BaseException as err:
        entries(path).note_failure(path, err)  # this launch's other ranks stop waiting
        raise
    return loaded, {"source": "trained", "path": str(path), "key": key, **metrics}
