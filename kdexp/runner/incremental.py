"""A class-incremental run: a chain (``kdexp.runner.chain.run_steps``) whose step k trains on step k's
classes, grows the previous step's model's head and is taught by a frozen copy of it.

Each step is a sub-run ``step<k>/`` with its own checkpoints, curves and results.json (plus, for
iCaRL, ``memory.json``: the exemplars after the step); after every step the model is evaluated on
the test images of all classes seen so far, per step's classes (a row of the accuracy matrix).
A finished step is reused when the run is started again in the same folder, so a run stopped in
step 3 resumes in step 3 with the memory step 2 left. The run's results.json holds the matrix,
average incremental accuracy, final accuracy and average forgetting.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

from kdexp.errors import SetupError
from kdexp.incremental.head import grown
from kdexp.incremental.memory import MEMORY_FILE, ExemplarMemory, nme_predict, penultimate_features
from kdexp.incremental.metrics import matrix_figure, step_accuracies, summary
from kdexp.incremental.protocol import (
    ClassSplit,
    IncrementalData,
    check_incremental_cfg,
    class_split,
    expected_num_classes,
)
from kdexp.methods import METHODS, DistillationModule
from kdexp.models import BuiltModel
from kdexp.results import log_final, write_results
from kdexp.runner.assemble import hparams_row
from kdexp.runner.build import Prepared, build_role, make_module, prepare
from kdexp.tools.config import plain
from kdexp.runner.chain import run_steps, step_cfg
from kdexp.runner.kinds import STEP_RUNNERS, runs_own_steps
from kdexp.runner.single import fit_and_report
from kdexp.runner.spec import RunSpec
from kdexp.run_record import earlier_failures, is_finished, read_results
from kdexp.tools.weights import read_torch

log = logging.getLogger("kdexp")


def incremental_methods() -> list[str]:
    return [name for name in METHODS.names() if runs_own_steps(METHODS.get(name))]


def check_run(spec: RunSpec) -> type[DistillationModule]:
    """The method and ``incremental`` options, before any data is loaded."""
    cfg = spec.cfg
    inc = cfg.get("incremental")
    name = cfg.method.name
    if not inc:
        raise ValueError(
            f"method={name} is a class-incremental method: choose a protocol with incremental=<preset> "
            f"(e.g. incremental=fashion_mnist_5; presets in configs/incremental/)"
        )
    cls = spec.method_cls
    if not runs_own_steps(cls):
        raise ValueError(
            f"incremental runs train with a class-incremental method; method={name} is not one: "
            f"choose one of {', '.join(incremental_methods())}"
        )
    check_incremental_cfg(plain(inc), expected_num_classes(plain(cfg.data)), cls.uses_memory)
    return cls


class IncrementalSteps:
    """What the chain needs to know about each step: its data and model, whether it already
    finished, and what to measure after it (memory update, the accuracy-matrix row)."""

    def __init__(self, spec: RunSpec, data: IncrementalData) -> None:
        self.spec, self.cfg, self.data, self.method = spec, spec.cfg, data, spec.method_cls
        self.split = data.split
        uses_memory = self.method.uses_memory
        self.memory = ExemplarMemory(int(self.cfg.incremental.get("memory", 0))) if uses_memory else None

    def run_one(self, k: int, teacher: BuiltModel | None) -> tuple[BuiltModel, dict[str, Any]]:
        """Step k (a sub-run ``step<k>/``): trained, or reused if it finished; then measured."""
        sub = step_cfg(self.cfg, "step", k)
        step_dir = Path(sub.paths.output_dir)
        pl.seed_everything(sub.seed, workers=True)
        prep = self.step_prep(k, sub, teacher)
        done = self.finished(step_dir)
        if done is not None:
            log.info("Step %d already finished in %s: reusing it", k, step_dir)
            prep.student.module.load_state_dict(read_torch(step_dir / "student.pt"))
            results = done
        else:
            part = {"step": k, "chain_step": "step"}  # kdexp-report reports the run, not its steps
            step_spec = self.spec.for_step(sub)
            results = fit_and_report(step_spec, prep, make_module(step_spec, prep), part, chained=True)
        return prep.student, self.after_step(k, sub, prep, results, done is not None)

    def step_prep(self, k: int, sub: DictConfig, teacher: BuiltModel | None) -> Prepared:
        seen = self.split.seen(k - 1)
        if teacher is None:
            student = build_role("student", plain(sub.student), seen, self.data.base.input_shape[0])
        else:
            student = grown(teacher, seen)
        exemplars = self.memory.indices() if self.memory is not None else None
        datamodule = self.data.step(k - 1, exemplars, joint=self.method.trains_on_seen)
        info = {}
        if teacher is not None:  # the previous step's model: its weights file and class count (load_from_checkpoint)
            previous = Path(self.cfg.paths.output_dir) / f"step{k - 1}" / "student.pt"
            info = {"source": f"step {k - 1}", "path": str(previous), "num_classes": self.split.seen(k - 2)}
        return Prepared(datamodule, student, teacher, info)

    def finished(self, step_dir: Path) -> dict[str, Any] | None:
        """A step's results, if it finished with its matrix row, weights and (iCaRL) memory."""
        results = read_results(step_dir) if is_finished(step_dir) else None
        if results is None or "incremental" not in results or not (step_dir / "student.pt").is_file():
            return None
        return results if self.memory is None or (step_dir / MEMORY_FILE).is_file() else None

    def after_step(self, k: int, sub: DictConfig, prep: Prepared, results: dict[str, Any], resumed: bool) -> dict[str, Any]:
        step_dir = Path(sub.paths.output_dir)
        if resumed:
            if self.memory is not None:
                self.memory = ExemplarMemory.load(step_dir)
            return results
        model = prep.student
        if self.memory is not None:
            self.update_memory(k - 1, model)
            if rank_zero_only.rank == 0:
                self.memory.save(step_dir)
        if results:  # rank 0 only
            results["incremental"] = self.evaluate(k - 1, model, prep)
            write_results(results, step_dir)
        return results

    def update_memory(self, step: int, model: BuiltModel) -> None:
        """iCaRL: shrink every old class to budget // seen exemplars, herd as many for each new
        class, then recompute every class's mean exemplar feature with the new model."""
        memory, seen = self.memory, self.split.seen(step)
        m = memory.per_class(seen)
        memory.reduce(m)
        for label in self.split.classes(step):
            candidates = self.data.class_indices(label)
            feats, _, _ = penultimate_features(model.module, model.classifier, self.data.subset("train", candidates))
            memory.add(label, candidates, feats, m)
        for label in self.split.order[:seen]:
            stored = torch.tensor(memory.exemplars[label], dtype=torch.int64)
            feats, _, _ = penultimate_features(model.module, model.classifier, self.data.subset("train", stored))
            memory.set_mean(label, feats)

    def evaluate(self, step: int, model: BuiltModel, prep: Prepared) -> dict[str, Any]:
        """The step's row of the accuracy matrix: the network's head (argmax over the seen
        classes' logits) and, with a memory, nearest-mean-of-exemplars."""
        feats, logits, positions = penultimate_features(model.module, model.classifier, prep.datamodule.test_set)
        tasks, task_of = self.split.tasks, self.split.task_of_position()
        row, acc = step_accuracies(logits.argmax(1), positions, task_of, tasks)
        out: dict[str, Any] = {
            "step": step + 1,
            "classes": self.split.classes(step),
            "seen": self.split.seen(step),
            "train_images": len(prep.datamodule.train_set),
            "head": {"row": row, "accuracy_seen": acc},
        }
        if self.memory is not None:
            means = self.memory.class_means(list(self.split.order[: self.split.seen(step)]))
            row, acc = step_accuracies(nme_predict(feats, means), positions, task_of, tasks)
            out["nme"] = {"row": row, "accuracy_seen": acc}
            out["memory_size"] = len(self.memory)
            out["memory_per_class"] = self.memory.per_class(self.split.seen(step))
        return out


@STEP_RUNNERS.register("incremental_steps")
def run_incremental(spec: RunSpec) -> dict[str, Any]:
    """Train ``incremental.tasks`` steps with ``method``; report the accuracy matrix and summaries."""
    cfg = spec.cfg
    try:
        method = check_run(spec)
    except ValueError as err:
        raise SetupError(str(err)) from err
    if cfg.get("performance") is not None:  # steps train on subsets of the per-sample datasets
        with open_dict(cfg):
            cfg.performance.lean_data = False
    prep = prepare(spec)  # validates models, optimizer, data; no teacher: each step's is the previous model
    try:
        check_incremental_cfg(plain(cfg.incremental), prep.datamodule.num_classes, method.uses_memory)
    except ValueError as err:
        raise SetupError(str(err)) from err
    split = class_split(plain(cfg.incremental), prep.datamodule.num_classes)
    steps = IncrementalSteps(spec, IncrementalData(prep.datamodule, split))
    done = run_steps(None, split.tasks, steps.run_one)
    if rank_zero_only.rank != 0:
        return {}
    results = assemble(spec, split, [r for _, _, r in done])
    failures = earlier_failures(cfg.paths.output_dir)  # an attempt that failed in a step, resumed here
    if failures:
        results["run"]["earlier_failures"] = failures
    write_results(results, cfg.paths.output_dir)
    log_incremental(cfg, results)
    print_incremental(results)
    return results


def classifier_summary(step_results: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matrix = [r["incremental"][name]["row"] for r in step_results]
    seen = [r["incremental"][name]["accuracy_seen"] for r in step_results]
    return summary(matrix, seen)


def assemble(spec: RunSpec, split: ClassSplit, step_results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's results.json: the last step's model as ``student``, with ``acc_top1`` the final
    accuracy of the method's classifier (NME for iCaRL, else the head)."""
    cfg, method = spec.cfg, spec.method_cls
    primary = "nme" if method.uses_memory else "head"
    classifiers = {name: classifier_summary(step_results, name) for name in ("head", "nme") if name in step_results[-1]["incremental"]}
    last = dict(step_results[-1].get("student", {}))
    last["acc_top1_head"] = last.get("acc_top1")
    last.pop("acc_top1_best_epoch", None)  # the head's, of the last step only: in step<k>/results.json
    last["acc_top1"] = classifiers[primary]["final_accuracy"]
    run = {
        "method": cfg.method.name,
        "data": cfg.data.name,
        "teacher": None,
        "student": cfg.student.name,
        "seed": cfg.seed,
        "tasks": split.tasks,
        "class_order": list(split.order),
        "duration_s": round(sum(r.get("run", {}).get("duration_s", 0.0) for r in step_results), 1),  # the steps
        "output_dir": cfg.paths.output_dir,
        "complete": True,
        "status": "complete",
        "hparams": hparams_row(cfg, spec.method, None),  # kdexp-report's HParams columns
    }
    if method.uses_memory:
        run["memory"] = int(cfg.incremental.memory)
    return {
        "run": run,
        "teacher": {},
        "student": last,
        "incremental": {
            "classifier": primary,
            **classifiers[primary],
            "classifiers": classifiers,
            "steps": [{k: v for k, v in r["incremental"].items() if k not in ("head", "nme")} for r in step_results],
        },
    }


def log_incremental(cfg: DictConfig, results: dict[str, Any]) -> None:
    """Per-step scalars (``incremental/<classifier>_acc_seen``, ``_acc_step<j>_classes``, the step
    as the x axis) to every configured logger, the matrix as an image to TensorBoard, and one
    HParams row with the summary numbers (the steps' own curves are in step<k>/)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    inc = results["incremental"]
    loggers = [instantiate(lg) for lg in (resolved.get("logger") or {}).values() if lg]
    for logger in loggers:
        for name, stats in inc["classifiers"].items():
            for i, (row, seen) in enumerate(zip(stats["accuracy_matrix"], stats["accuracy_seen"]), start=1):
                scalars = {f"incremental/{name}_acc_seen": seen}
                scalars.update({f"incremental/{name}_acc_step{j}_classes": v for j, v in enumerate(row, start=1) if v is not None})
                logger.log_metrics(scalars, step=i)
            if isinstance(logger, TensorBoardLogger):
                title = f"{results['run']['method']} ({name}) on {results['run']['data']}: accuracy (%)"
                figure = matrix_figure(stats["accuracy_matrix"], title)
                logger.experiment.add_figure(f"incremental/{name}_accuracy_matrix", figure, len(stats["accuracy_seen"]))
    metrics = {
        f"final/{key}": float(inc[key])
        for key in ("average_incremental_accuracy", "final_accuracy", "average_forgetting")
        if inc.get(key) is not None
    }
    for problem in log_final(loggers, results["run"]["hparams"], metrics, results["run"]["tasks"]):
        log.warning("A logger could not record the incremental numbers (results.json has them): %s", problem)


def print_incremental(results: dict[str, Any], console: Console | None = None) -> None:
    """The accuracy matrix (%) and the summary numbers, per classifier."""
    run, inc = results["run"], results["incremental"]
    console = console or Console()
    for name, stats in inc["classifiers"].items():
        matrix = stats["accuracy_matrix"]
        table = Table(title=f"{run['method']} on {run['data']}, {run['tasks']} steps — {name}: accuracy (%)")
        table.add_column("after step")
        for j in range(len(matrix)):
            table.add_column(f"step {j + 1}", justify="right")
        table.add_column("all seen", justify="right")
        for i, row in enumerate(matrix):
            cells = ["" if v is None else f"{100 * v:.1f}" for v in row]
            table.add_row(str(i + 1), *cells, f"{100 * stats['accuracy_seen'][i]:.1f}")
        forgetting = stats["average_forgetting"]
        table.caption = (
            f"average incremental accuracy {100 * stats['average_incremental_accuracy']:.2f}%, final "
            f"{100 * stats['final_accuracy']:.2f}%, average forgetting "
            + ("—" if forgetting is None else f"{100 * forgetting:.2f} pts")
        )
        console.print(table)
