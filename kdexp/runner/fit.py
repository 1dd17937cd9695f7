"""Fitting and testing: resume where asked, stop cleanly on signals and NaN losses, test the last
and the best-validation epoch."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from kdexp.callbacks import NonFiniteLossError
from kdexp.data import ImageDataModule
from kdexp.distributed import discard_hpc_checkpoints, resume_checkpoint
from kdexp.errors import KdexpError, RunInterrupted, SetupError, TrainingFailed
from kdexp.methods import DistillationModule
from kdexp.phases import phase
from kdexp.runner.resume import check_resume
from kdexp.runner.build import Prepared
from kdexp.runner.folder import describe_last_checkpoint, last_checkpoint, last_checkpoint_path
from kdexp.runner.spec import RunSpec
from kdexp.runner.signals import Signals
from kdexp.tools.weights import read_torch


def resume_from(spec: RunSpec, prep: Prepared, chained: bool) -> str | None:
    """The checkpoint ``fit`` continues from: ``ckpt_path`` (read when the run was checked), or
    (auto-resume, e.g. a requeued SLURM job) this folder's newest checkpoint, checked against
    this run's settings."""
    cfg = spec.cfg
    ckpt_path = spec.ckpt_path(missing_ok=chained)
    if ckpt_path is not None:
        return ckpt_path
    ckpt_path = resume_checkpoint(
        None, cfg.paths.output_dir, cfg.get("auto_resume", "slurm"), last=last_checkpoint_path(cfg)
    )
    if ckpt_path is not None:  # the same fingerprint check as an explicit ckpt_path
        try:
            saved = read_torch(ckpt_path, mmap=True)
            check_resume(cfg, saved, prep.teacher is not None, f"auto_resume: {ckpt_path}")
        except ValueError as err:
            raise SetupError(f"{err} (auto_resume=never starts over in this folder)") from None
    return ckpt_path


def resume_command(cfg: DictConfig) -> str:
    """The command that resumes this run, ready to paste into a shell: its overrides, then
    ``ckpt_path=last`` in its own folder (values quoted where a shell would change them)."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # outside a Hydra run
        overrides = []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra.run.dir=", "auto_resume="))]
    return shlex.join(["kdexp", *kept, "ckpt_path=last", f"hydra.run.dir={cfg.paths.output_dir}"])


def _stopped(err: KdexpError, trainer: pl.Trainer, cfg: DictConfig) -> KdexpError:
    """``err`` with where the run stopped (for its failure record)."""
    err.epoch, err.step, err.last_checkpoint = trainer.current_epoch, trainer.global_step, last_checkpoint(cfg)
    return err


def train_and_test(
    cfg: DictConfig, trainer: pl.Trainer, module: DistillationModule, prep: Prepared, ckpt_path: str | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """fit (from ``ckpt_path``) then test: (test metrics, the last epoch's logged metrics).

    SIGTERM, SIGINT and a non-finite loss become clear errors (recorded in results.json by the
    caller), with the checkpoints kept."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    Signals.trainer = trainer  # SIGINT: the same clean stop at the next batch as SIGTERM
    try:
        with phase("training"):
            trainer.fit(module, datamodule=prep.datamodule, ckpt_path=ckpt_path)
        discard_hpc_checkpoints(trainer)  # else test() would load a SLURM requeue checkpoint
        if trainer.received_sigterm:  # arrived after the last epoch's check: still not a finished run
            raise SIGTERMException
        last_val = dict(trainer.callback_metrics)  # the last epoch's val/* (test resets them)
        with phase("evaluation"):
            (metrics,) = trainer.test(module, datamodule=prep.datamodule, verbose=False)
        if trainer.received_sigterm:
            raise SIGTERMException
    except SIGTERMException:
        name = Signals.received or "SIGTERM"
        message = (
            f"received {name}; stopped at epoch {trainer.current_epoch} (0-based), global step "
            f"{trainer.global_step}, with the checkpoints kept; last.ckpt: {describe_last_checkpoint(cfg)}. "
            f"Resume with:\n  {resume_command(cfg)}"
        )
        raise _stopped(RunInterrupted(message, name), trainer, cfg) from None
    except NonFiniteLossError as err:
        message = (
            f"{err}. The last good checkpoint is kept: {describe_last_checkpoint(cfg)}. Lower "
            "optimizer.lr, set trainer.gradient_clip_val, or check the loss weights"
        )
        raise _stopped(TrainingFailed(message), trainer, cfg) from None
    finally:
        Signals.trainer = None
    return metrics, last_val


def test_best_checkpoint(
    trainer: pl.Trainer, module: DistillationModule, datamodule: ImageDataModule, last_metrics: dict[str, float]
) -> tuple[int | None, dict[str, float]]:
    """Test metrics of the epoch with the best validation accuracy, and that epoch (1-based).

    The checkpoint callback keeps that epoch (``monitor: val/acc``). When it is the last epoch the
    last test's metrics are those numbers (no second pass); otherwise only the student is tested
    again (the teacher did not change). Its numbers go to results.json only, not to the curves;
    the module gets its last weights back afterwards.
    """
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None and callback.monitor else ""
    if not path or not Path(path).is_file():
        return None, {}
    found = re.search(r"epoch=(\d+)", Path(path).name)
    best_epoch = int(found.group(1)) + 1 if found else None
    if best_epoch is not None and best_epoch == trainer.current_epoch:
        return best_epoch, dict(last_metrics)
    last_weights = copy.deepcopy(module.state_dict())
    loggers = trainer.loggers
    trainer.loggers = []
    module.evaluate_teacher = False
    try:
        with phase("evaluation"):
            (metrics,) = trainer.test(module, datamodule=datamodule, ckpt_path=path, verbose=False)
    finally:
        trainer.loggers = loggers
        module.evaluate_teacher = True
        module.load_state_dict(last_weights)
    return best_epoch, metrics
