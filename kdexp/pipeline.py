"""The steps of a run, shared by single runs and Born-Again chains:
prepare (data, student, teacher) → fit → test → profile → results.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from kdexp.callbacks import NonFiniteLossError, is_write_error
from kdexp.data import ImageDataModule, build_datamodule
from kdexp.distributed import check_distributed_cfg, discard_hpc_checkpoints, resume_checkpoint
from kdexp.methods import DistillationModule, build_method, check_method_cfg
from kdexp.models import BuiltModel, build_model
from kdexp.models.registry import UnknownModelError
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.performance import apply_performance, check_performance, data_options, finish_cache
from kdexp.profile import profile_model
from kdexp.results import RESULTS_FILE, comparison, hparams_metrics, print_results, write_results
from kdexp.teacher_route import provide_route, trainable_teacher
from kdexp.teachers import architecture_cfg, provide_teacher, unreadable_reason

log = logging.getLogger("kdexp")

# Problems in the config that are reported as one clear paragraph, without a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError)
# What a run that stopped early leaves in its folder (results.json is written only by a finished run).
FAILURE_FILE = "failure.json"


class KdexpError(Exception):
    """A run that stops with a one-paragraph message (no traceback) and a non-zero exit status."""

    kind = "error"
    exit_code = 1


class SetupError(KdexpError):
    """A bad input found before training started; its message names the key and what is allowed."""

    kind = "configuration error"
    exit_code = 2


class TrainingFailed(KdexpError):
    """Training diverged (a NaN or infinite loss); the last good checkpoint is kept."""

    kind = "training failed"
    exit_code = 3


class OutputError(KdexpError):
    """A file of the run could not be written (permissions, read-only or full file system)."""

    kind = "cannot write output"
    exit_code = 4


class RunInterrupted(KdexpError):
    """The run received SIGTERM; it stopped at an epoch boundary with its checkpoints kept."""

    kind = "interrupted"
    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process


@contextlib.contextmanager
def reported_errors() -> Any:
    """Around a whole run: "cannot write" OSErrors (EACCES, EROFS, ENOSPC, ...) become an
    OutputError naming the path; SIGTERM outside the student's training (e.g. while a teacher
    trains) becomes RunInterrupted instead of Lightning's silent exit with status 0."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        yield
    except SIGTERMException:
        raise RunInterrupted("received SIGTERM before the student's training finished") from None
    except OSError as err:
        if not is_write_error(err):
            raise
        where = err.filename or "the run's output folder"
        raise OutputError(
            f"{where}: {err.strerror or err} (errno {err.errno}); free space or choose a writable "
            "folder (hydra.run.dir=..., paths.log_dir=...); files written before this one are kept"
        ) from None


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where this run's checkpoints go (the model_checkpoint callback's dirpath)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(dirpath) if dirpath else Path(cfg.paths.output_dir) / "checkpoints"


def resolve_ckpt_path(cfg: DictConfig, missing_ok: bool = False) -> str | None:
    """``ckpt_path``: null, ``last`` (this run folder's checkpoints/last.ckpt) or a file path.

    Fails before any training if the checkpoint is missing or is not a Lightning training
    checkpoint; with ``missing_ok`` a missing ``last`` means "start afresh" (Born-Again chains,
    whose later generations have not started yet).
    """
    value = cfg.get("ckpt_path")
    if value in (None, ""):
        return None
    path = checkpoint_dir(cfg) / "last.ckpt" if str(value) == "last" else Path(str(value))
    if not path.is_file():
        if str(value) == "last":
            if missing_ok:
                return None
            raise ValueError(
                f"ckpt_path=last: there is no checkpoint to resume in this run folder ({path} does not "
                "exist); rerun in the interrupted run's folder (hydra.run.dir=<that folder>) or give "
                "ckpt_path=<path to a .ckpt file>"
            )
        raise FileNotFoundError(f"ckpt_path={str(value)!r} does not exist")
    try:
        # mmap: reads the structure, not the tensors; weights_only: plain containers and tensors only.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated, foreign or not a torch file
        raise ValueError(
            f"ckpt_path={value} ({path}) cannot be read as a Lightning checkpoint: "
            f"{unreadable_reason(path, err)}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "epoch"} <= set(checkpoint):
        raise ValueError(
            f"ckpt_path={str(value)!r} is not a Lightning training checkpoint (expected the "
            "'state_dict', 'loops' and 'epoch' of a kdexp run's checkpoints/*.ckpt); a teacher's "
            "weights go in teacher.checkpoint"
        )
    return str(path)


def plain(cfg: DictConfig | dict | None) -> dict[str, Any]:
    """A resolved, plain-dict copy of a config node (what modules and checkpoints may hold)."""
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


@dataclass
class Prepared:
    datamodule: ImageDataModule
    student: BuiltModel
    teacher: BuiltModel | None
    teacher_info: dict[str, Any] = field(default_factory=dict)


def check_config(cfg: DictConfig) -> type[DistillationModule]:
    """Cheap checks of method, optimizer and scheduler, before any data or teacher work."""
    method_cls, _ = check_method_cfg(plain(cfg.method))
    check_distributed_cfg(plain(cfg.trainer), cfg.get("auto_resume", "slurm"))
    probe = build_optimizer([torch.zeros(1, requires_grad=True)], plain(cfg.optimizer))
    build_scheduler(probe, plain(cfg.scheduler), max_epochs=1, total_steps=1)
    resolve_ckpt_path(cfg, missing_ok=method_cls.chain_runner)
    return method_cls


def build_role(role: str, cfg: dict[str, Any], num_classes: int, channels: int) -> BuiltModel:
    """``build_model`` for the teacher or the student, with errors that name ``<role>.name``."""
    try:
        return build_model(cfg, num_classes, channels)
    except UnknownModelError as err:
        raise ValueError(f"{role}.name={err.name!r} is not a registered model; registered models are: {err.choices}") from None
    except ValueError as err:
        raise ValueError(f"{role} ({role}.source={cfg.get('source', 'kdexp')!r}, {role}.name={cfg.get('name')!r}): {err}") from None


def prepare(cfg: DictConfig) -> Prepared:
    """Data, a freshly initialised student and (if the method needs one) the frozen teacher."""
    try:
        method_cls = check_config(cfg)
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = build_datamodule(plain(cfg.data), **data_options(plain(cfg.get("performance"))))
        datamodule.prepare_data()
        datamodule.setup("fit")
        check_performance(plain(cfg.get("performance")), method_cls, plain(cfg.method), datamodule)
        num_classes, channels = datamodule.num_classes, datamodule.input_shape[0]
        student = build_role("student", plain(cfg.student), num_classes, channels)
        teacher, teacher_info = None, {}
        needs_teacher = method_cls.requires_teacher(plain(cfg.method))
        # Layer paths etc. are checked on the bare architectures, before a teacher is trained.
        teacher_arch = (
            build_role("teacher", architecture_cfg(plain(cfg.teacher)), num_classes, channels)
            if needs_teacher
            else None
        )
        method_cls.check_models(student, teacher_arch, plain(cfg.method))
        # Methods that need the teacher's training route (RCO) name its epochs; checked here too.
        epochs = int(cfg.trainer.get("max_epochs") or 0)
        route = method_cls.route_epochs(plain(cfg.method), plain(cfg.teacher), epochs) if needs_teacher else None
        if needs_teacher and route is None and isinstance(cfg.teacher.get("checkpoint"), ListConfig):
            raise ValueError("teacher.checkpoint is a list (a teacher's route): only method=rco takes one; give one path")
        if route is not None:
            teacher, teacher_info = provide_route(
                teacher_arch, plain(cfg.teacher), plain(cfg.data), datamodule, plain(cfg.trainer),
                cache_dir=cfg.paths.cache_dir, log_dir=Path(cfg.paths.output_dir) / "teacher", epochs=route,
            )
        elif needs_teacher and method_cls.teacher_trainable:  # trained with the student (rocket)
            teacher, teacher_info = trainable_teacher(teacher_arch, plain(cfg.teacher), num_classes, cfg.method.name)
        elif needs_teacher:
            teacher, teacher_info = provide_teacher(
                teacher_arch,
                plain(cfg.teacher),
                plain(cfg.data),
                datamodule,
                plain(cfg.trainer),
                cache_dir=cfg.paths.cache_dir,
                log_dir=Path(cfg.paths.output_dir) / "teacher",
            )
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    return Prepared(datamodule, student, teacher, teacher_info)


def make_module(cfg: DictConfig, prep: Prepared) -> DistillationModule:
    try:
        module = build_method(
            plain(cfg.method),
            prep.student,
            prep.teacher,
            prep.datamodule.num_classes,
            prep.datamodule.input_shape,
            plain(cfg.optimizer),
            plain(cfg.scheduler),
        )
        perf = plain(cfg.get("performance"))
        apply_performance(module, prep.datamodule, perf, cfg.method.name, cfg.paths.output_dir)
        return module
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err


def make_trainer(cfg: DictConfig) -> pl.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: a learning-rate monitor would have nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def hparams_row(cfg: DictConfig, teacher: str | None) -> dict[str, Any]:
    """What distinguishes this run from its neighbours, flat, for the TensorBoard HParams tab."""
    row: dict[str, Any] = {
        "data": cfg.data.name,
        "teacher": teacher or "none",
        "student": cfg.student.name,
        "seed": cfg.seed,
        "max_epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size,
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr,
        "scheduler": cfg.scheduler.name,
    }
    for key, value in plain(cfg.method).items():
        name = "method" if key == "name" else f"method.{key}"
        row[name] = str(value) if isinstance(value, (list, dict)) else value
    return row


def accuracies(metrics: dict[str, float], role: str) -> dict[str, float]:
    """``acc_top1`` (and ``acc_top5``) of ``role`` from the logged ``test/<role>_acc*`` metrics."""
    out = {}
    for key, name in (("acc_top1", f"test/{role}_acc"), ("acc_top5", f"test/{role}_acc_top5")):
        if name in metrics:
            out[key] = float(metrics[name])
    return out


def profile_models(cfg: DictConfig, models: dict[str, nn.Module], input_shape, device) -> dict[str, dict]:
    """Measure every model the same way (kdexp.profile), on the run's device."""
    if not cfg.profile.enabled:
        return {}
    return {
        role: profile_model(
            model,
            input_shape,
            device=device,
            threads=cfg.profile.threads,
            throughput_batch=cfg.profile.throughput_batch,
            min_run_time=cfg.profile.min_run_time,
        ).as_dict()
        for role, model in models.items()
    }


def archive_finished(output_dir: Path) -> None:
    """Keep an earlier finished run's results.json and weights in this folder under stamped names.

    A run started (or resumed) in a folder that already holds finished results would otherwise
    overwrite them: ``results.json`` becomes ``results.<time>.json`` (which ``kdexp-report`` does
    not read) and ``student*.pt`` become ``student*.<time>.pt``.
    """
    previous = output_dir / RESULTS_FILE
    try:
        finished = json.loads(previous.read_text()).get("run", {}).get("complete", False)
    except (OSError, ValueError, AttributeError):
        return
    if not finished:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(previous.stat().st_mtime))
    for path in [previous, *output_dir.glob("student*.pt")]:
        if re.fullmatch(r"student\d*\.pt|results\.json", path.name):
            target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
            os.replace(path, target)
            log.info("Kept the earlier finished run's %s as %s", path.name, target.name)


def last_checkpoint(cfg: DictConfig) -> str | None:
    path = checkpoint_dir(cfg) / "last.ckpt"
    return str(path) if path.is_file() else None


def record_failure(cfg: DictConfig, trainer: pl.Trainer, status: str, message: str) -> None:
    """Write ``failure.json`` (status, message, epoch, step, last checkpoint); never results.json."""
    record = {
        "status": status,
        "message": message,
        "method": cfg.method.name,
        "seed": cfg.seed,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "last_checkpoint": last_checkpoint(cfg),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = Path(cfg.paths.output_dir) / FAILURE_FILE
    with contextlib.suppress(OSError):  # a full disk must not hide the original error
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)


def earlier_failures(output_dir: Path) -> list[dict[str, Any]]:
    """The failure record of an earlier attempt in this folder (now resumed), removed from disk."""
    path = output_dir / FAILURE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    path.unlink(missing_ok=True)  # the finished run's results.json keeps it (run.earlier_failures)
    return [record]


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save through a buffer and an atomic rename: a write error is an OSError naming
    ``path``, and a crash never leaves a half-written file."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getbuffer())
    os.replace(tmp, path)


def train_and_test(
    cfg: DictConfig, trainer: pl.Trainer, module: DistillationModule, prep: Prepared
) -> tuple[dict[str, float], str | None, dict[str, Any]]:
    """fit (resuming from ``ckpt_path``) then test: (test metrics, the checkpoint resumed from,
    the last epoch's logged metrics).

    SIGTERM and a non-finite loss become clear errors, with ``failure.json`` written and the
    checkpoints kept."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    ckpt_path = resolve_ckpt_path(cfg, missing_ok=type(module).chain_runner)
    # No ckpt_path: a requeued SLURM job (auto_resume) continues from its own newest checkpoint.
    ckpt_path = ckpt_path or resume_checkpoint(None, cfg.paths.output_dir, cfg.get("auto_resume", "slurm"))
    try:
        trainer.fit(module, datamodule=prep.datamodule, ckpt_path=ckpt_path)
        discard_hpc_checkpoints(trainer)  # else test() would load a SLURM requeue checkpoint
        if trainer.received_sigterm:  # arrived after the last epoch's check: still not a finished run
            raise SIGTERMException
        last_val = dict(trainer.callback_metrics)  # the last epoch's val/* (test resets them)
        (metrics,) = trainer.test(module, datamodule=prep.datamodule, verbose=False)
        if trainer.received_sigterm:
            raise SIGTERMException
    except SIGTERMException:
        last = last_checkpoint(cfg)
        message = (
            f"received SIGTERM; stopped at epoch {trainer.current_epoch}, global step {trainer.global_step}, "
            f"with the checkpoints kept (the last: {last or 'none yet'}). Resume with ckpt_path=last "
            f"hydra.run.dir={cfg.paths.output_dir} (and the same overrides)"
        )
        record_failure(cfg, trainer, "interrupted", message)
        raise RunInterrupted(message) from None
    except NonFiniteLossError as err:
        last = last_checkpoint(cfg)
        message = (
            f"{err}. The last good checkpoint is kept: {last or 'none (no epoch finished)'}. Lower "
            "optimizer.lr, set trainer.gradient_clip_val, or check the loss weights"
        )
        record_failure(cfg, trainer, "non_finite_loss", message)
        raise TrainingFailed(message) from None
    return metrics, ckpt_path, last_val


def fit_and_report(
    cfg: DictConfig,
    prep: Prepared,
    module: DistillationModule,
    extra_run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit, test, write results.json (accuracies first, then profiles), log HParams, print."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive_finished(output_dir)
    prep.datamodule.shuffle_seed = int(cfg.seed)  # each epoch's order from (seed, epoch): exact resume
    trainer = make_trainer(cfg)
    metrics, resumed_from, last_val = train_and_test(cfg, trainer, module, prep)
    best_epoch, best_metrics = test_best_checkpoint(trainer, module, prep.datamodule)
    cache_summary = finish_cache(module)  # after fit and test: the test ran the teacher online
    if not trainer.is_global_zero:
        return {}
    models = module.report_models()
    for role, model in models.items():
        if role != "teacher" or type(module).teacher_trainable:  # a jointly trained teacher is a result too
            save_weights(model.state_dict(), output_dir / f"{role}.pt")
    results: dict[str, Any] = {
        "run": {
            "method": cfg.method.name,
            "data": cfg.data.name,
            "teacher": prep.teacher.name if prep.teacher else None,
            "student": module.student_info.name,
            "seed": cfg.seed,
            "epochs": trainer.current_epoch,
            "output_dir": str(output_dir),
            "teacher_source": prep.teacher_info,
            **({"teacher_cache": cache_summary} if cache_summary else {}),
            **(extra_run or {}),
        },
        **{role: accuracies(metrics, role) for role in models},
        "test_metrics": {k: float(v) for k, v in metrics.items()},
    }
    if resumed_from:
        results["run"]["resumed_from"] = resumed_from
    failures = earlier_failures(output_dir)
    if failures:
        results["run"]["earlier_failures"] = failures
    results.setdefault("teacher", {})
    for role in models:
        if role != "teacher":
            add_epoch_summaries(results[role], role, last_val, best_metrics)
    if best_epoch is not None:
        results["run"]["best_epoch"] = best_epoch
    add_method_summaries(results, metrics, last_val)
    results.update(module.method_results(metrics))
    write_results(results, output_dir)  # the accuracies are safe before profiling starts

    device = trainer.strategy.root_device
    for role, profile in profile_models(cfg, models, prep.datamodule.input_shape, device).items():
        results[role].update(profile)
    results["comparison"] = comparison(results["teacher"], results["student"]) if prep.teacher else {}
    if "test/agreement" in metrics:
        results["comparison"]["agreement_top1"] = float(metrics["test/agreement"])
    results["run"]["duration_s"] = round(time.time() - started, 1)
    results["run"]["complete"] = True
    write_results(results, output_dir)

    for logger in trainer.loggers:
        logger.log_hyperparams(hparams_row(cfg, results["run"]["teacher"]), hparams_metrics(results))
        logger.finalize("success")
    print_results(results)
    return results


def test_best_checkpoint(
    trainer: pl.Trainer, module: DistillationModule, datamodule: ImageDataModule
) -> tuple[int | None, dict[str, float]]:
    """Test metrics of the epoch with the best validation accuracy, and that epoch (1-based).

    The checkpoint callback keeps that epoch (``monitor: val/acc``). Its numbers go to
    results.json only, not to the curves; the module gets its last weights back afterwards.
    """
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None and callback.monitor else ""
    if not path or not Path(path).is_file():
        return None, {}
    last_weights = copy.deepcopy(module.state_dict())
    loggers = trainer.loggers
    trainer.loggers = []
    try:
        (metrics,) = trainer.test(module, datamodule=datamodule, ckpt_path=path, verbose=False)
    finally:
        trainer.loggers = loggers
        module.load_state_dict(last_weights)
    epoch = re.search(r"epoch=(\d+)", Path(path).name)
    return (int(epoch.group(1)) + 1 if epoch else None), metrics


def add_epoch_summaries(
    stats: dict[str, Any], role: str, last_val: dict[str, Any], best: dict[str, float]
) -> None:
    """The last epoch's validation accuracy and the best-validation epoch's test accuracy."""
    val = last_val.get(f"val/{role}_acc", last_val.get("val/acc") if role == "student" else None)
    if val is not None:
        stats["val_acc_top1"] = float(val)
    if f"test/{role}_acc" in best:
        stats["acc_top1_best_epoch"] = float(best[f"test/{role}_acc"])


def add_method_summaries(
    results: dict[str, Any], metrics: dict[str, float], last_val: dict[str, Any]
) -> None:
    """Cohort methods: the ensemble's accuracy and the best member, chosen on validation."""
    ensemble = accuracies(metrics, "ensemble")
    if ensemble:
        results["ensemble"] = ensemble
    members = sorted((k for k in results if re.fullmatch(r"student\d+", k)), key=lambda k: int(k[7:]))
    if members:
        val = {m: float(last_val.get(f"val/{m}_acc", -1.0)) for m in members}
        best = max(members, key=val.__getitem__)
        results["run"]["best_student"] = best
        results["run"]["cohort"] = members
        results["student"] = results[best]


def run_single(cfg: DictConfig) -> dict[str, Any]:
    """One experiment, start to finish. Returns the results dict (also in results.json)."""
    prep = prepare(cfg)
    pl.seed_everything(cfg.seed, workers=True)  # data order: the same whether the teacher was cached
    module = make_module(cfg, prep)
    return fit_and_report(cfg, prep, module)
