"""``kdexp``: compose the config → data, teacher, student → fit → test → profile → results.

    kdexp data=cifar100 teacher=resnet32x4 student=resnet8x4 method=kd seed=1
    kdexp -m method=vanilla,kd seed=0,1,2          # a Hydra multirun sweep
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from kdexp.data import build_datamodule
from kdexp.methods import build_method, check_method_cfg, method_class
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.models import build_model
from kdexp.profile import profile_model
from kdexp.results import comparison, hparams_metrics, print_results, write_results
from kdexp.teachers import provide_teacher

log = logging.getLogger("kdexp")

# Problems in the config that are reported as one clear paragraph, without a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError)


class SetupError(Exception):
    """A bad input found before training started; its message names the key and what is allowed."""


def _plain(cfg: DictConfig | dict | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_callbacks_and_loggers(cfg: DictConfig) -> tuple[list[pl.Callback], list[Any]]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    return callbacks, loggers


def hparams_row(cfg: DictConfig) -> dict[str, Any]:
    """What distinguishes this run from its neighbours, flat, for the TensorBoard HParams tab."""
    row: dict[str, Any] = {
        "data": cfg.data.name,
        "teacher": cfg.teacher.name if method_class(cfg.method.name).needs_teacher else "none",
        "student": cfg.student.name,
        "seed": cfg.seed,
        "max_epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size,
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr,
        "scheduler": cfg.scheduler.name,
    }
    for key, value in _plain(cfg.method).items():
        row[f"method.{key}" if key != "name" else "method"] = value if not isinstance(value, (list, dict)) else str(value)
    return row


def setup(cfg: DictConfig) -> tuple[Any, ...]:
    """Build everything a run needs; bad inputs raise SetupError before any training."""
    try:
        method_cls, _ = check_method_cfg(_plain(cfg.method))  # before any teacher training
        probe = build_optimizer([torch.zeros(1, requires_grad=True)], _plain(cfg.optimizer))
        build_scheduler(probe, _plain(cfg.scheduler), max_epochs=1, total_steps=1)
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = build_datamodule(_plain(cfg.data))
        datamodule.prepare_data()
        datamodule.setup("fit")
        student = build_model(_plain(cfg.student), datamodule.num_classes, datamodule.input_shape[0])
        teacher, teacher_info = None, {}
        if method_cls.needs_teacher:
            teacher, teacher_info = provide_teacher(
                _plain(cfg.teacher),
                _plain(cfg.data),
                datamodule,
                _plain(cfg.trainer),
                cache_dir=cfg.paths.cache_dir,
                log_dir=Path(cfg.paths.output_dir) / "teacher",
            )
        pl.seed_everything(cfg.seed, workers=True)  # data order: same whether the teacher was cached
        module = build_method(
            _plain(cfg.method),
            student,
            teacher,
            datamodule.num_classes,
            datamodule.input_shape,
            _plain(cfg.optimizer),
            _plain(cfg.scheduler),
        )
        callbacks, loggers = build_callbacks_and_loggers(cfg)
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    return datamodule, teacher, teacher_info, module, trainer


def profile_both(cfg: DictConfig, module: Any, datamodule: Any, device: torch.device) -> dict[str, dict]:
    profiles = {}
    models = {"student": module.student, "teacher": module.teacher}
    for role, model in models.items():
        if model is None:
            continue
        profiles[role] = profile_model(
            model,
            datamodule.input_shape,
            device=device,
            threads=cfg.profile.threads,
            throughput_batch=cfg.profile.throughput_batch,
            min_run_time=cfg.profile.min_run_time,
        ).as_dict()
    return profiles


def run(cfg: DictConfig) -> dict[str, Any]:
    """One experiment, start to finish. Returns the results dict (also in results.json)."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datamodule, teacher, teacher_info, module, trainer = setup(cfg)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    torch.save(module.student.state_dict(), output_dir / "student.pt")

    def acc(role: str) -> dict[str, float]:
        out = {"acc_top1": metrics.get(f"test/{role}_acc")}
        if f"test/{role}_acc_top5" in metrics:
            out["acc_top5"] = metrics[f"test/{role}_acc_top5"]
        return {k: float(v) for k, v in out.items() if v is not None}

    results: dict[str, Any] = {
        "run": {
            "method": cfg.method.name,
            "data": cfg.data.name,
            "teacher": teacher.name if teacher else None,
            "student": module.student_info.name,
            "seed": cfg.seed,
            "output_dir": str(output_dir),
            "teacher_source": teacher_info,
            "epochs": trainer.current_epoch,
        },
        "student": acc("student"),
        "teacher": acc("teacher") if teacher else {},
        "test_metrics": {k: float(v) for k, v in metrics.items()},
    }
    write_results(results, output_dir)  # the accuracies are safe before profiling starts

    if cfg.profile.enabled:
        for role, profile in profile_both(cfg, module, datamodule, trainer.strategy.root_device).items():
            results[role].update(profile)
    results["comparison"] = comparison(results["teacher"], results["student"]) if teacher else {}
    if "test/agreement" in metrics:
        results["comparison"]["agreement_top1"] = float(metrics["test/agreement"])
    results["run"]["duration_s"] = round(time.time() - started, 1)
    write_results(results, output_dir)

    for logger in trainer.loggers:
        logger.log_hyperparams(hparams_row(cfg), hparams_metrics(results))
        logger.finalize("success")
    print_results(results)
    return results


# The repository's configs/ folder (an absolute path: Hydra would read "../configs" as a module).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    OmegaConf.resolve(cfg)
    try:
        results = run(cfg)
    except SetupError as err:
        Console(stderr=True).print(f"[bold red]kdexp: configuration error:[/] {err}")
        sys.exit(2)
    # Returned for sweepers that optimise a value (e.g. the Optuna sweeper).
    return results.get("student", {}).get("acc_top1") if results else None


if __name__ == "__main__":
    main()
