"""What the run layer asks of the teacher room: the run's teacher (one ``TeacherRequest``), the
teacher's weights recorded in the module (so a checkpoint rebuilds it), and the stores of its
outputs attached to the module (test logits, training logits), each keyed by the teacher's weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig

from kdexp.checks import check_cache_writable
from kdexp.data import data_identity
from kdexp.methods import MethodChoice
from kdexp.models import BuiltModel
from kdexp.teacher.cache import TeacherRequest
from kdexp.teacher.cache import provide_teacher as cached_teacher
from kdexp.teacher.route import provide_route, trainable_teacher
from kdexp.teacher.store import state_digest
from kdexp.teacher.test_logits import attach_teacher_test_logits, data_fingerprint, store_key
from kdexp.tools.config import plain
from kdexp.tools.files import absolute

log = logging.getLogger("kdexp")


def provide_run_teacher(
    cfg: DictConfig, method: MethodChoice, architecture: BuiltModel, datamodule: Any
) -> tuple[BuiltModel, dict[str, Any]]:
    """The run's teacher, as the method declares it: a route of anchors (``route_epochs``), a
    fresh trainable teacher (``teacher_use.trained_with_student``), or the frozen, cached teacher."""
    epochs = int(cfg.trainer.get("max_epochs") or 0)
    method_cls = method.cls
    route = method_cls.route_epochs(method.options, plain(cfg.teacher), epochs)
    if route is None and isinstance(cfg.teacher.get("checkpoint"), ListConfig):
        raise ValueError(
            f"teacher.checkpoint is a list (a teacher's route): method={cfg.method.name} takes one path"
        )
    if not method_cls.teacher_use.trained_with_student and not cfg.teacher.get("checkpoint"):
        check_cache_writable(cfg.paths.cache_dir)
    # logger=none: no curves for the teacher either
    request = TeacherRequest(
        architecture, plain(cfg.teacher), plain(cfg.data), datamodule, plain(cfg.trainer), cfg.paths.cache_dir,
        log_dir=Path(cfg.paths.output_dir) / "teacher" if cfg.get("logger") else None,
        route_epochs=route, trainable=method_cls.teacher_use.trained_with_student, method=str(cfg.method.name),
    )
    return provide_teacher(request)


def provide_teacher(request: TeacherRequest) -> tuple[BuiltModel, dict[str, Any]]:
    """The teacher a request asks for: a route of anchors, a teacher the method trains itself, or
    the frozen teacher from its checkpoint or the cache (trained once when absent)."""
    if request.route_epochs is not None:
        return provide_route(request)
    if request.trainable:  # trained together with the student
        return trainable_teacher(request.architecture, request.teacher, request.datamodule.num_classes, request.method)
    return cached_teacher(request)


def record_teacher_weights(module: Any, teacher_info: dict[str, Any]) -> None:
    """Put the teacher's weights file in the module's hyperparameters, so a checkpoint can rebuild
    it: its path, its anchors' files (a route, RCO) and its class count where it differs from the
    student's (the previous step of a class-incremental run)."""
    teacher = module.hparams.get("models", {}).get("teacher")
    if teacher is None:
        return
    if teacher_info.get("path"):
        teacher["checkpoint"] = absolute(teacher_info["path"])
    route = teacher_info.get("route")
    if route:
        teacher["route"] = [absolute(p) for p in (route.values() if isinstance(route, dict) else route)]
    if teacher_info.get("num_classes") is not None:
        teacher["num_classes"] = int(teacher_info["num_classes"])


def attach_stores(cfg: DictConfig, prep: Any, module: Any) -> None:
    """The teacher's stored outputs for a freshly built module: its test logits and (with the
    teacher-output cache) its training logits, where the teacher has weights of its own."""
    store_teacher_test_logits(cfg, prep, module)
    store_teacher_train_logits(cfg, prep, module)


def stores_teacher_outputs(cfg: DictConfig, prep: Any, switch: str) -> bool:
    """Whether the teacher's outputs may be stored for later runs: a teacher with weights of its
    own (cached, trained or a checkpoint; not a throwaway debug teacher) and ``performance.<switch>`` on."""
    info = prep.teacher_info or {}
    if info.get("source") not in ("cache", "trained", "checkpoint") or info.get("cached") is False:
        return False
    return bool((cfg.get("performance") or {}).get(switch, True))


def store_device(cfg: DictConfig) -> tuple[str, str]:
    """(device type, precision) the stored teacher outputs are computed with: part of their key."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    device = "cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu"
    return device, str(cfg.trainer.get("precision", "32-true"))


def store_teacher_test_logits(cfg: DictConfig, prep: Any, module: Any) -> None:
    """A teacher with weights of its own (cached, trained, a checkpoint) is run on the test set
    once for all runs: its stored logits give its accuracy and the agreement (kdexp.teacher.test_logits)."""
    if not stores_teacher_outputs(cfg, prep, "teacher_test_logits"):
        return
    attach_teacher_test_logits(module, prep.datamodule, cfg.paths.cache_dir, plain(cfg.data), *store_device(cfg))


def store_teacher_train_logits(cfg: DictConfig, prep: Any, module: Any) -> None:
    """With one view per training sample (no augmentation), the teacher-output cache starts from
    the table kept with this teacher (and is kept for the next run): a run with a cached teacher
    then needs no teacher forward at all. Keyed like the test logits (kdexp.teacher.test_logits): the
    teacher's weights, the data's config and content, the device type and precision, plus the
    table's grid and dtype.
    Not for a teacher that changes during the run (RCO's route of anchors)."""
    cache = module.teacher_outputs
    if cache is None or cache.storage != "memory" or cache.grid.views_per_sample != 1:
        return
    if not stores_teacher_outputs(cfg, prep, "teacher_train_logits"):
        return
    if type(module).route_epochs(module.options, plain(cfg.teacher), int(cfg.trainer.get("max_epochs") or 0)):
        return
    data = {**data_identity(plain(cfg.data)), "grid": list(cache.grid), "dtype": str(cache.dtype), "split": "train",
            "content": data_fingerprint(prep.datamodule.train_set)}  # the files, not only the config
    key = store_key(state_digest(module.teacher.state_dict()), data, *store_device(cfg))
    rows = cache.load_store(Path(cfg.paths.cache_dir) / "teacher_train_logits" / f"{key}.pt")
    if rows:
        log.info("Teacher-output cache: %d of %d training views kept from an earlier run with this teacher", rows, cache.rows)
