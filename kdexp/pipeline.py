"""The steps of a run, shared by single runs and Born-Again chains:
prepare (data, student, teacher) → fit → test → profile → results.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from kdexp.callbacks import NonFiniteLossError, is_write_error
from kdexp.checks import check_cache_writable, check_run_options
from kdexp.data import ImageDataModule, build_datamodule
from kdexp.distributed import check_distributed_cfg, discard_hpc_checkpoints, resume_checkpoint
from kdexp.errors import KdexpError, OutputError, RunInterrupted, SetupError, TrainingFailed
from kdexp.methods import DistillationModule, build_method, check_method_cfg
from kdexp.models import BuiltModel, build_model
from kdexp.models.registry import UnknownModelError
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.performance import apply_performance, check_performance, data_options, finish_cache
from kdexp.profile import profile_model
from kdexp.results import comparison, hparams_metrics, log_final, override_hparams, print_results, write_results
from kdexp.resume import FingerprintCheckpoint, check_resume, checkpoint_epoch, load_student_weights, run_fingerprint
from kdexp.run_record import RESULTS_FILE, earlier_failures, failure_record, is_finished, record_failure, write_atomic
from kdexp.teacher_route import provide_route, trainable_teacher
from kdexp.teachers import architecture_cfg, provide_teacher, unreadable_reason

log = logging.getLogger("kdexp")

# Problems in the config that are reported as one clear paragraph, without a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError)
__all__ = ["KdexpError", "OutputError", "RunInterrupted", "SetupError", "TrainingFailed"]  # kdexp.errors


class _Signals:
    """SIGINT (Ctrl-C) is handled like SIGTERM: during the student's ``fit`` it asks Lightning for
    the same clean stop; elsewhere it ends the run with RunInterrupted. A second Ctrl-C interrupts
    at once."""

    received: str | None = None
    trainer: pl.Trainer | None = None  # the trainer whose fit a signal should stop cleanly

    @classmethod
    def on_signal(cls, signum: int, frame: Any) -> None:
        cls.received = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        if cls.trainer is not None:
            cls.trainer._signal_connector.received_sigterm = True  # Lightning's own SIGTERM flag
            return
        raise _Interrupted(cls.received)


class _Interrupted(BaseException):
    """Raised by the signal handler outside the student's fit (Lightning re-raises BaseExceptions)."""


@contextlib.contextmanager
def reported_errors() -> Any:
    """Around a whole run: "cannot write" OSErrors (EACCES, EROFS, ENOSPC, ...) become an
    OutputError naming the path; SIGTERM or SIGINT outside the student's training (e.g. while a
    teacher trains) becomes RunInterrupted instead of Lightning's silent exit or a traceback."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    handlers = {}
    if _is_main_thread():
        handlers = {sig: signal.signal(sig, _Signals.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    _Signals.received = None
    try:
        yield
    except (SIGTERMException, _Interrupted, KeyboardInterrupt):
        name = _Signals.received or "SIGINT"
        raise RunInterrupted(
            f"received {name} before the student's training finished; nothing of this run is recorded as "
            "finished. Rerun with the same settings (a teacher whose training finished is cached and reused)",
            name
        ) from None
    except OSError as err:
        if not is_write_error(err):
            raise
        where = err.filename or "the run's output folder"
        raise OutputError(
            f"{where}: {err.strerror or err} (errno {err.errno}); free space or choose a writable "
            "folder (hydra.run.dir=..., paths.log_dir=...); files written before this one are kept"
        ) from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where this run's last.ckpt goes (the last_checkpoint callback's dirpath)."""
    dirpath = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath", default=None) or OmegaConf.select(
        cfg, "callbacks.model_checkpoint.dirpath", default=None
    )
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
    method_cls, _ = check_method_cfg(plain(cfg.method))
    check_resume(cfg, checkpoint, method_cls.requires_teacher(plain(cfg.method)), str(path))
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
    """Cheap checks of trainer, data, seed, method, optimizer and scheduler, before any data or
    teacher work."""
    check_run_options(cfg)
    method_cls, _ = check_method_cfg(plain(cfg.method))
    check_distributed_cfg(plain(cfg.trainer), cfg.get("auto_resume", "slurm"))
    probe = build_optimizer([torch.zeros(1, requires_grad=True)], plain(cfg.optimizer))
    build_scheduler(probe, plain(cfg.scheduler), max_epochs=1, total_steps=1)
    resolve_ckpt_path(cfg, missing_ok=method_cls.chain_runner)
    if cfg.get("init_weights"):
        if cfg.get("ckpt_path"):
            raise ValueError(
                "ckpt_path and init_weights are both set: ckpt_path continues a run, init_weights starts a "
                "new one from a checkpoint's weights; give one of them"
            )
        load_student_weights(cfg.init_weights)
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
        if needs_teacher and not method_cls.teacher_trainable and not cfg.teacher.get("checkpoint"):
            check_cache_writable(cfg.paths.cache_dir)
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through kdexp's atomic writer: a full disk leaves the previous
    checkpoint (or none), never a truncated file, and the error names the checkpoint, not a temp file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())


def make_trainer(cfg: DictConfig, fingerprint: dict[str, Any] | None = None) -> pl.Trainer:
    """The student's trainer: the configured callbacks and loggers, checkpoints written by the
    atomic writer and (with ``fingerprint``) carrying what defines the run (kdexp.resume)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if fingerprint is not None:
        callbacks.append(FingerprintCheckpoint(fingerprint, int(cfg.trainer.max_epochs)))
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: a learning-rate monitor would have nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


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
    if HydraConfig.initialized():  # every command-line override is a column too
        for key, value in override_hparams(list(HydraConfig.get().overrides.task)).items():
            row.setdefault(key, value)
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
            store=Path(cfg.paths.cache_dir) / "timings.json" if cfg.profile.get("reuse_timings", True) else None,
        ).as_dict()
        for role, model in models.items()
    }


def archive_finished(output_dir: Path) -> None:
    """Keep an earlier finished run's results.json and weights in this folder under stamped names.

    Called once the new attempt has trained and tested, just before it writes its own results:
    ``results.json`` becomes ``results.<time>.json`` (which ``kdexp-report`` does not read) and
    ``student*.pt`` become ``student*.<time>.pt``. An attempt that fails leaves them as they were.
    """
    previous = output_dir / RESULTS_FILE
    if not is_finished(output_dir):
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


def describe_last_checkpoint(cfg: DictConfig) -> str:
    """``<path> (the end of epoch index N)``, or what to do when no epoch finished."""
    last = last_checkpoint(cfg)
    if last is None:
        return "none yet (no epoch finished: a rerun starts over)"
    epoch = checkpoint_epoch(last)
    return f"{last} (it holds the end of epoch {epoch}, 0-based)" if epoch is not None else last


def run_info(cfg: DictConfig) -> dict[str, Any]:
    """What identifies a run in its failure record (the fields ``kdexp-report`` groups by)."""
    info = {
        "method": OmegaConf.select(cfg, "method.name"),
        "data": OmegaConf.select(cfg, "data.name"),
        "teacher": OmegaConf.select(cfg, "teacher.name"),
        "student": OmegaConf.select(cfg, "student.name"),
        "seed": OmegaConf.select(cfg, "seed"),
        "output_dir": OmegaConf.select(cfg, "paths.output_dir"),
    }
    with contextlib.suppress(Exception):  # outside a Hydra run (tests, the Python API)
        from hydra.core.hydra_config import HydraConfig

        info["overrides"] = list(HydraConfig.get().overrides.task)
    return info


def record_run_failure(cfg: DictConfig, err: BaseException) -> None:
    """Record a run that stopped in its results.json (never over a finished run's results)."""
    try:
        kind = getattr(err, "kind", None) or "crashed"
        message = str(err) if isinstance(err, KdexpError) else f"{type(err).__name__}: {err}"
        failure = failure_record(
            kind,
            message,
            epoch=getattr(err, "epoch", None),
            step=getattr(err, "step", None),
            last_checkpoint=getattr(err, "last_checkpoint", None) or last_checkpoint(cfg),
        )
        if isinstance(err, RunInterrupted):
            failure["signal"] = err.signal_name
        record_failure(cfg.paths.output_dir, run_info(cfg), failure)
    except Exception:  # noqa: BLE001 - recording must never hide the original error
        log.debug("could not record the failure", exc_info=True)


def _stopped(err: KdexpError, trainer: pl.Trainer, cfg: DictConfig) -> KdexpError:
    """``err`` with where the run stopped (for its failure record)."""
    err.epoch, err.step, err.last_checkpoint = trainer.current_epoch, trainer.global_step, last_checkpoint(cfg)
    return err


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """torch.save through a buffer and the atomic writer: a write error is an OSError naming
    ``path``, and a crash never leaves a half-written file."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def train_and_test(
    cfg: DictConfig, trainer: pl.Trainer, module: DistillationModule, prep: Prepared
) -> tuple[dict[str, float], str | None, dict[str, Any]]:
    """fit (resuming from ``ckpt_path``) then test: (test metrics, the checkpoint resumed from,
    the last epoch's logged metrics).

    SIGTERM, SIGINT and a non-finite loss become clear errors (recorded in results.json by the
    caller), with the checkpoints kept."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    ckpt_path = resolve_ckpt_path(cfg, missing_ok=type(module).chain_runner)
    # No ckpt_path: a requeued SLURM job (auto_resume) continues from its own newest checkpoint.
    if ckpt_path is None:
        ckpt_path = resume_checkpoint(None, cfg.paths.output_dir, cfg.get("auto_resume", "slurm"))
        if ckpt_path is not None:  # the same fingerprint check as an explicit ckpt_path
            try:
                saved = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
                check_resume(cfg, saved, prep.teacher is not None, f"auto_resume: {ckpt_path}")
            except ValueError as err:
                raise SetupError(f"{err} (auto_resume=never starts over in this folder)") from None
    _Signals.trainer = trainer  # SIGINT: the same clean stop at the next batch as SIGTERM
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
        name = _Signals.received or "SIGTERM"
        message = (
            f"received {name}; stopped at epoch {trainer.current_epoch} (0-based), global step "
            f"{trainer.global_step}, with the checkpoints kept; last.ckpt: {describe_last_checkpoint(cfg)}. "
            f"Resume with ckpt_path=last hydra.run.dir={cfg.paths.output_dir} (and the same overrides)"
        )
        raise _stopped(RunInterrupted(message, name), trainer, cfg) from None
    except NonFiniteLossError as err:
        message = (
            f"{err}. The last good checkpoint is kept: {describe_last_checkpoint(cfg)}. Lower "
            "optimizer.lr, set trainer.gradient_clip_val, or check the loss weights"
        )
        raise _stopped(TrainingFailed(message), trainer, cfg) from None
    finally:
        _Signals.trainer = None
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
    prep.datamodule.shuffle_seed = int(cfg.seed)  # each epoch's order from (seed, epoch): exact resume
    trainer = make_trainer(cfg, run_fingerprint(cfg, prep.teacher is not None))
    metrics, resumed_from, last_val = train_and_test(cfg, trainer, module, prep)
    best_epoch, best_metrics = test_best_checkpoint(trainer, module, prep.datamodule)
    cache_summary = finish_cache(module)  # after fit and test: the test ran the teacher online
    if not trainer.is_global_zero:
        return {}
    failures = earlier_failures(output_dir)  # before this attempt's results replace the record
    archive_finished(output_dir)  # only now: a failed attempt leaves a finished run's results alone
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
    results["run"]["status"] = "complete"
    results["run"]["hparams"] = hparams_row(cfg, results["run"]["teacher"])  # kdexp-report's HParams columns
    write_results(results, output_dir)

    for problem in log_final(trainer.loggers, results["run"]["hparams"], hparams_metrics(results), trainer.global_step):
        log.warning("A logger could not record the final numbers (results.json has them): %s", problem)
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
    init_student(cfg, module)
    return fit_and_report(cfg, prep, module)


def init_student(cfg: DictConfig, module: DistillationModule) -> None:
    """``init_weights=<.ckpt or student.pt>``: a new run that starts from those student weights
    (its own optimizer, schedule and epochs; ``ckpt_path=`` is the way to continue a run)."""
    path = cfg.get("init_weights")
    if not path:
        return
    try:
        state = load_student_weights(path)
        missing, unexpected = module.student.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        raise SetupError(f"init_weights={path!r} does not fit student.name={cfg.student.name!r}: {err}") from None
    except ValueError as err:
        raise SetupError(str(err)) from None
    if missing or unexpected:
        raise SetupError(
            f"init_weights={path!r} does not fit student.name={cfg.student.name!r}: missing keys "
            f"{list(missing)[:5]}, unexpected keys {list(unexpected)[:5]}"
        )
    log.info("Student initialised from %s (a new run: fresh optimizer, schedule and epochs)", path)
