"""Assembling a finished run's results: accuracies by role, epoch summaries, profiles, the
teacher-vs-student comparison, the HParams row; written to results.json and printed.

Roles come from the module (``report_models``), metric names from :mod:`kdexp.metric_names`,
method-specific fields from ``module.summarize``: nothing here knows a method by name.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import nn

from kdexp import phases
from kdexp.methods import DistillationModule, MethodChoice
from kdexp.metric_names import accuracies, metric_name
from kdexp.results import comparison, hparams_metrics, log_final, override_hparams, print_results, write_results
from kdexp.runner.build import Prepared
from kdexp.runner.spec import RunSpec
from kdexp.tools.config import plain
from kdexp.runtimes import profile_runtimes  # kdexp.profile (eager), + ONNX Runtime if asked
from kdexp.threads import started_threads

log = logging.getLogger("kdexp")


def run_tags(cfg: DictConfig) -> list[str]:
    """``tags``: a list of labels (a single word counts as one tag)."""
    tags = cfg.get("tags") or []
    return [str(tags)] if isinstance(tags, str) else [str(t) for t in tags]


def hparams_row(cfg: DictConfig, method: MethodChoice, teacher: str | None) -> dict[str, Any]:
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
        "tags": ",".join(run_tags(cfg)),
    }
    # Every option's effective value, defaults included (a vanilla run: ce_weight 1, kd_weight 0), so
    # no run lacks a method column and TensorBoard's parallel-coordinates view draws every run;
    # the options the config gave first.
    options = dataclasses.asdict(method.options)
    given = {"name": method.name, **{k: options[k] for k in method.given}}
    for key, value in {**given, **{k: v for k, v in options.items() if k not in given}}.items():
        name = "method" if key == "name" else f"method.{key}"
        row[name] = str(value) if isinstance(value, (list, dict)) else value
    if HydraConfig.initialized():  # every command-line override is a column too
        for key, value in override_hparams(list(HydraConfig.get().overrides.task)).items():
            row.setdefault(key, value)
    return row


def profile_models(cfg: DictConfig, models: dict[str, nn.Module], input_shape, device) -> dict[str, dict]:
    """Measure every model the same way, on the run's device: eager PyTorch (kdexp.profile) and
    the other ``profile.runtimes`` (kdexp.runtimes), eager timings reused from the timing store."""
    if not cfg.profile.enabled:
        return {}
    store = Path(cfg.paths.cache_dir) / "timings.json" if cfg.profile.get("reuse_timings", True) else None
    return {role: profile_runtimes(model, input_shape, cfg.profile, device, store=store) for role, model in models.items()}


def run_header(cfg: DictConfig, prep: Prepared, student: str) -> dict[str, Any]:
    """What identifies a run at the top of its results (single runs and chains alike)."""
    return {
        "method": cfg.method.name,
        "data": cfg.data.name,
        "teacher": prep.teacher.name if prep.teacher else None,
        "student": student,
        "seed": cfg.seed,
        "tags": run_tags(cfg),
        "output_dir": str(cfg.paths.output_dir),
        "teacher_source": prep.teacher_info,
        "threads": started_threads() or torch.get_num_threads(),  # runtime.threads as set when the run started
        "threads_at_end": torch.get_num_threads(),  # a shared run's share when it finished (kdexp.threads)
    }


def epoch_summaries(role: str, last_val: dict[str, Any], best: dict[str, float]) -> dict[str, float]:
    """The last epoch's validation accuracy and the best-validation epoch's test accuracy."""
    # the student's validation accuracy is logged without a role (val/acc)
    val = last_val.get(metric_name("val", role), last_val.get(metric_name("val")) if role == "student" else None)
    out = {"val_acc_top1": float(val)} if val is not None else {}
    if metric_name("test", role) in best:
        out["acc_top1_best_epoch"] = float(best[metric_name("test", role)])
    return out


def assemble(
    cfg: DictConfig,
    prep: Prepared,
    module: DistillationModule,
    fitted: dict[str, Any],
    extra_run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results of a fitted and tested run, before profiling. ``fitted``: ``metrics`` (test),
    ``last_val``, ``best`` (test metrics of the best-validation epoch), ``best_epoch``,
    ``epochs``, ``resumed_from``, ``earlier_failures``, ``teacher_cache``."""
    metrics, roles = fitted["metrics"], module.report_models()
    run = {
        **run_header(cfg, prep, module.student_info.name),
        "epochs": fitted["epochs"],
        **({"teacher_cache": fitted["teacher_cache"]} if fitted.get("teacher_cache") else {}),
        **(extra_run or {}),
    }
    if type(module).members_field:
        run["members_field"] = type(module).members_field
    for key in ("resumed_from", "earlier_failures", "best_epoch"):
        if fitted.get(key):
            run[key] = fitted[key]
    results: dict[str, Any] = {
        "run": run,
        **{role: accuracies(metrics, "test", role) for role in roles},
        "test_metrics": {k: float(v) for k, v in metrics.items()},
    }
    results.setdefault("teacher", {})
    for role in roles:
        if role != "teacher":
            results[role].update(epoch_summaries(role, fitted["last_val"], fitted["best"]))
    module.summarize(results, metrics, fitted["last_val"])
    return results


def complete(
    spec: RunSpec, results: dict[str, Any], models: dict[str, nn.Module], device: Any, datamodule: Any, started: float
) -> dict[str, Any]:
    """Add profiles (and what students declare about their stored form), the comparison and the
    duration; write results.json as complete."""
    cfg = spec.cfg
    output_dir = Path(cfg.paths.output_dir)
    write_results(results, output_dir)  # the accuracies are safe before profiling starts
    with phases.phase("profiling"):
        for role, profile in profile_models(cfg, models, datamodule.input_shape, device).items():
            results[role].update(profile)
        stored_sizes(cfg, results, models, datamodule)
    has_teacher = bool(results["run"].get("teacher"))
    results["comparison"] = comparison(results["teacher"], results["student"]) if has_teacher else {}
    agreement = results["test_metrics"].get(metric_name("test", metric="agreement"))
    if agreement is not None:
        results["comparison"]["agreement_top1"] = float(agreement)
    results["run"]["duration_s"] = round(time.time() - started, 1)
    results["run"]["phases_s"] = phases.seconds()  # where the wall time went (kdexp.phases)
    results["run"]["hparams"] = hparams_row(cfg, spec.method, results["run"]["teacher"])  # kdexp-report's HParams columns
    return mark_complete(results, output_dir)


def stored_sizes(cfg: DictConfig, results: dict[str, Any], models: dict[str, nn.Module], datamodule: Any) -> None:
    """What a student declares about its deployed form: ``memory_report()`` (its storage at its
    real bit-width, kdexp.quantize; the projection's bits) and ``integer_report(datamodule,
    profile)`` (an 8-bit student as a real int8 model: accuracy and latency)."""
    for role, model in models.items():
        if role == "teacher":
            continue
        if hasattr(model, "memory_report"):
            results[role].update(model.memory_report())
        if hasattr(model, "integer_report") and cfg.profile.enabled:
            results[role].update(model.integer_report(datamodule, plain(cfg.profile)))


def mark_complete(results: dict[str, Any], output_dir: str | Path) -> dict[str, Any]:
    """Write ``results`` as a finished run's record."""
    results["run"]["complete"] = True
    results["run"]["status"] = "complete"
    write_results(results, output_dir)
    return results


def publish(results: dict[str, Any], loggers: list[Any], step: int) -> None:
    """The final numbers to every logger (the HParams row) and the table to the console."""
    for problem in log_final(loggers, results["run"]["hparams"], hparams_metrics(results), step):
        log.warning("A logger could not record the final numbers (results.json has them): %s", problem)
    print_results(results)
