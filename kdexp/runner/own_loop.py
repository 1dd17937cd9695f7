"""The run of a task with its own loop (kdexp.tasks.OwnLoop): data, models, the teacher
(cached by content, like image teachers), the method's training, evaluation and timing come from
the task's declaration; this module gives it what every run has: the run folder, results.json,
the printed table, the loggers' curves and HParams row, the sweeper's number. No task or method
is named here."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kdexp import phases
from kdexp.errors import SetupError, TrainingFailed
from kdexp.results import comparison as model_comparison
from kdexp.runner.assemble import hparams_row, mark_complete, publish, run_tags
from kdexp.runner.kinds import TASK_RUNNERS
from kdexp.runner.spec import CONFIG_ERRORS, RunSpec
from kdexp.teacher.store import Store, key_of
from kdexp.threads import started_threads
from kdexp.tools.config import plain
from kdexp.tools.files import save_torch
from kdexp.tools.weights import read_torch
from kdexp.results import write_results

log = logging.getLogger("kdexp")
LOADER_KEYS = ("batch_size", "eval_batch_size", "num_workers", "pin_memory", "root")  # never change a teacher
MODEL_SOURCE_KEYS = ("checkpoint", "seed", "train")


def make_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]


def curve_logger(loggers: list[Any], prefix: str = "") -> Callable[[int, dict[str, float]], None]:
    """Each epoch's numbers to every logger (step = epoch), and a line to the console."""
    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        numbers = {f"{prefix}{k}": float(v) for k, v in record.items()}
        for logger in loggers:
            logger.log_metrics(numbers, step=epoch)
        log.info("%sepoch %d: %s", prefix, epoch, ", ".join(f"{k} {v:.4g}" for k, v in record.items()))

    return on_epoch


def check_task_run(spec: RunSpec) -> None:
    """What an own-loop task does not do (yet): resume from a checkpoint, start from given weights."""
    for key in ("ckpt_path", "init_weights"):
        if spec.cfg.get(key):
            raise SetupError(
                f"{key}={spec.cfg.get(key)} is not supported by task={spec.task.name}: its runs train from scratch "
                f"in minutes; leave {key}=null"
            )


def check_optimized_metric(spec: RunSpec, has_teacher: bool) -> None:
    """``optimized_metric`` must name a number the task's results.json will have (before training)."""
    key = str(spec.cfg.get("optimized_metric"))
    section, _, name = key.partition(".")
    fields = spec.task.loop.result_fields()
    known = {"student": fields, **({"teacher": fields} if has_teacher else {})}
    if section in ("student", "teacher") and section in known and name in fields:
        return
    if section in ("comparison", "run") or (section == "student" and name in ("params", "size_mb", "latency_ms_b1")):
        return  # known only once the run has finished (entry.optimized_value checks it then)
    choices = [f"{s}.{f}" for s, names in known.items() for f in sorted(names)]
    raise ValueError(
        f"optimized_metric={key!r}: a task={spec.task.name} run's results.json will have no such number; choose one "
        f"of: {', '.join(choices)}"
    )


def teacher_entry(cfg: DictConfig, spec: RunSpec) -> tuple[Store, Path]:
    """The cache entry of the run's teacher: keyed by the task, the model config, the data config
    (loader settings aside), the recipe and the teacher's seed."""
    teacher = plain(cfg.teacher)
    identity = {
        "task": spec.task.name,
        "model": {k: v for k, v in teacher.items() if k not in MODEL_SOURCE_KEYS},
        "data": {k: v for k, v in plain(cfg.data).items() if k not in LOADER_KEYS},
        "recipe": teacher.get("train") or {},
        "seed": teacher.get("seed", 0),
    }
    store = Store(Path(cfg.paths.cache_dir) / "task_teachers", "teacher")
    return store, store.path(f"{spec.task.name}-{teacher['name']}-{key_of(identity)}")


def provide_teacher(spec: RunSpec, teacher: torch.nn.Module, data: Any, loggers: list[Any]) -> dict[str, Any]:
    """Load ``teacher.checkpoint``, or the cached teacher, or train it (its recipe) and cache it."""
    cfg, loop = spec.cfg, spec.task.loop
    if cfg.teacher.get("checkpoint"):
        state = read_torch(cfg.teacher.checkpoint)
        teacher.load_state_dict(state.get("state_dict", state))
        return {"source": "checkpoint", "path": str(cfg.teacher.checkpoint), "summary": f"loaded from {cfg.teacher.checkpoint}"}
    store, path = teacher_entry(cfg, spec)
    with store.locked(path):
        blob = store.get(path)
        if blob is not None:
            teacher.load_state_dict(blob["state_dict"])
            return {"source": "cache", "path": str(path), "summary": f"cached ({path.name})", **blob.get("meta", {})}
        started = time.time()
        torch.manual_seed(int(cfg.teacher.get("seed", 0)))
        fitted = loop.train_teacher(teacher, data, plain(cfg.teacher.train), int(cfg.teacher.get("seed", 0)),
                                    curve_logger(loggers, "teacher/"))
        meta = {"train_time_s": round(time.time() - started, 1), "epochs": len(fitted["history"])}
        store.save(path, {"state_dict": teacher.state_dict(), "meta": meta})
    return {"source": "trained", "path": str(path), "summary": f"trained for {meta['epochs']} epochs and cached ({path.name})", **meta}


def run_own_loop(spec: RunSpec) -> dict[str, Any]:
    """One run of a task with its own loop, start to finish; returns the results (also in results.json)."""
    cfg, loop, use = spec.cfg, spec.task.loop, spec.method_cls.teacher_use
    check_task_run(spec)
    OmegaConf.resolve(cfg)
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    has_teacher = spec.needs_teacher or use.trained_with_student
    try:
        pl.seed_everything(seed, workers=True, verbose=False)
        with phases.phase("data"):
            data = loop.prepare(plain(cfg.data), seed)
        student = loop.build_model("student", plain(cfg.student), data)
        teacher = None
        if has_teacher:
            torch.manual_seed(int(cfg.teacher.get("seed", 0)))
            teacher = loop.build_model("teacher", plain(cfg.teacher), data)
        check_optimized_metric(spec, has_teacher)
        for warning in loop.check(spec.method, student, teacher, data):
            log.warning("%s", warning)
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    loggers = make_loggers(cfg)
    teacher_info: dict[str, Any] = {}
    try:
        if spec.needs_teacher:
            with phases.phase("teacher"):
                teacher_info = provide_teacher(spec, teacher, data, loggers)
            teacher.eval().requires_grad_(False)
        elif use.trained_with_student:
            teacher_info = {"source": "trained with the student", "summary": "trained together with the student"}
        module = loop.make_method(spec.method, student, teacher, data)
        run = {"epochs": int(cfg.trainer.max_epochs), "batch_size": int(cfg.data.batch_size),
               "optimizer": plain(cfg.optimizer), "scheduler": plain(cfg.scheduler), "seed": seed}
        with phases.phase("training"):
            fitted = loop.fit(module, data, run, curve_logger(loggers))
    except FloatingPointError as err:
        raise TrainingFailed(f"{err}; lower optimizer.lr") from None
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    return report(spec, data, student, teacher, teacher_info, fitted, loggers, started)


def report(spec: RunSpec, data: Any, student: Any, teacher: Any, teacher_info: dict[str, Any], fitted: dict[str, Any],
           loggers: list[Any], started: float) -> dict[str, Any]:
    """Test both models, write results.json, profile, compare, log the HParams row, print the table."""
    cfg, loop = spec.cfg, spec.task.loop
    output_dir, primary = Path(cfg.paths.output_dir), loop.primary
    history = fitted["history"]
    with phases.phase("testing"):
        stats = {"student": loop.evaluate(student, data, "test")}
        last_val = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")} if history else {}
        stats["student"].update({f"val_{k}": v for k, v in last_val.items()})
        if fitted.get("best_state") is not None:
            last_state = {k: v.clone() for k, v in student.state_dict().items()}
            student.load_state_dict(fitted["best_state"])
            stats["student"][f"{primary}_best_epoch"] = loop.evaluate(student, data, "test", full=False)[primary]
            student.load_state_dict(last_state)
        stats["teacher"] = loop.evaluate(teacher, data, "test") if teacher is not None else {}
    save_torch(output_dir / "student.pt", student.state_dict())
    if teacher is not None:
        save_torch(output_dir / "teacher.pt", teacher.state_dict())
    results: dict[str, Any] = {
        "run": {
            "task": spec.task.name, "method": spec.method.name, "data": cfg.data.name,
            "teacher": cfg.teacher.name if teacher is not None else None, "student": cfg.student.name,
            "seed": cfg.seed, "tags": run_tags(cfg), "output_dir": str(output_dir), "teacher_source": teacher_info,
            "threads": started_threads() or torch.get_num_threads(), "epochs": len(history),
            "best_epoch": fitted.get("best_epoch"), "data_summary": data.summary,
            # what the generic results table, report and HParams row show for this task (kdexp.results)
            "primary_metric": primary, "table_rows": [list(r) for r in loop.rows], "logged_metrics": list(loop.logged),
        },
        "student": stats["student"], "teacher": stats["teacher"],
        "test_metrics": {f"test/{role}_{k}": v for role, s in stats.items() for k, v in s.items()},
    }
    write_results(results, output_dir)  # the metrics are safe before timing starts
    if cfg.profile.enabled:
        with phases.phase("profiling"):
            for role, model in (("student", student), ("teacher", teacher)):
                if model is not None:
                    results[role].update(loop.profile(model, data, plain(cfg.profile)))
    if teacher is not None:
        generic = {k: v for k, v in model_comparison(results["teacher"], results["student"]).items() if v is not None}
        results["comparison"] = {**generic, **loop.comparison(results["teacher"], results["student"])}
    else:
        results["comparison"] = {}
    results["run"]["duration_s"] = round(time.time() - started, 1)
    results["run"]["phases_s"] = phases.seconds()
    results["run"]["hparams"] = {"task": spec.task.name, **hparams_row(cfg, spec.method, results["run"]["teacher"])}
    mark_complete(results, output_dir)
    publish(results, loggers, len(history))
    return results


TASK_RUNNERS.register("own_loop")(run_own_loop)
