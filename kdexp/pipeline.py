"""The steps of a run, shared by single runs and Born-Again chains:
prepare (data, student, teacher) → fit → test → profile → results.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdexp.data import ImageDataModule, build_datamodule
from kdexp.methods import DistillationModule, build_method, check_method_cfg
from kdexp.models import BuiltModel, build_model
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.performance import apply_performance, check_performance, data_options, finish_cache
from kdexp.profile import profile_model
from kdexp.results import comparison, hparams_metrics, print_results, write_results
from kdexp.teachers import architecture_cfg, provide_teacher


# Problems in the config that are reported as one clear paragraph, without a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError)


class SetupError(Exception):
    """A bad input found before training started; its message names the key and what is allowed."""


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
    probe = build_optimizer([torch.zeros(1, requires_grad=True)], plain(cfg.optimizer))
    build_scheduler(probe, plain(cfg.scheduler), max_epochs=1, total_steps=1)
    return method_cls


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
        student = build_model(plain(cfg.student), num_classes, channels)
        teacher, teacher_info = None, {}
        needs_teacher = method_cls.requires_teacher(plain(cfg.method))
        # Layer paths etc. are checked on the bare architectures, before a teacher is trained.
        teacher_arch = (
            build_model(architecture_cfg(plain(cfg.teacher)), num_classes, channels)
            if needs_teacher
            else None
        )
        method_cls.check_models(student, teacher_arch, plain(cfg.method))
        if needs_teacher:
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
    trainer = make_trainer(cfg)
    trainer.fit(module, datamodule=prep.datamodule, ckpt_path=cfg.get("ckpt_path"))
    cache_summary = finish_cache(module)
    (metrics,) = trainer.test(module, datamodule=prep.datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    models = module.report_models()
    for role, model in models.items():
        if role != "teacher":
            torch.save(model.state_dict(), output_dir / f"{role}.pt")
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
    results.setdefault("teacher", {})
    add_method_summaries(results, metrics, trainer.callback_metrics)
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
