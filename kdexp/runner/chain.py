"""Chains of runs (Born-Again): run 0 is the teacher; run k+1 is a fresh student taught by run k.

Generic over any method that declares a plain ``chain`` (kdexp.methods.declarations.Chain: what a
run is called, its sub-folder, whether to report the ensemble) and ``chain_links`` (each run's
student model, e.g. Born-Again's copies of the student or a chain through teacher assistants). Each run is a full single run
(:func:`kdexp.runner.single.fit_and_report`) in ``<run>/<folder><k>/`` with its own checkpoints,
curves and results.json, so a chain can be inspected and resumed run by run; the chain's
results.json adds every run's numbers and the ensemble of the students.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from kdexp.methods.base import accuracy_metrics, ensemble_probabilities
from kdexp.models import BuiltModel, build_model
from kdexp.results import comparison, print_results
from kdexp.runner.assemble import mark_complete, run_header
from kdexp.runner.build import Prepared, make_module, prepare
from kdexp.runner.spec import RunSpec
from kdexp.tools.config import plain
from kdexp.runner.single import fit_and_report
from kdexp.run_record import is_finished, read_results
from kdexp.tools.weights import read_torch

log = logging.getLogger("kdexp")


def step_cfg(cfg: DictConfig, folder: str, step: int, link: dict | None = None) -> DictConfig:
    """The config of one run of the chain: its own output folder, seed and (``link``) student."""
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.paths.output_dir = str(Path(cfg.paths.output_dir) / f"{folder}{step}")
        sub.seed = int(cfg.seed) + step  # a fresh initialisation for every run
        if link is not None:
            sub.student = OmegaConf.create(link)
    OmegaConf.resolve(sub)
    return sub


def frozen_copy(model: BuiltModel) -> BuiltModel:
    """A separate, frozen copy: the next run's teacher never shares the student's tensors."""
    module = copy.deepcopy(model.module).eval().requires_grad_(False)
    return BuiltModel(module, model.name, model.stages, model.classifier, model.cfg)


def finished_step(step_dir: Path) -> dict[str, Any] | None:
    """The results of a run that already completed (for resuming a chain), or None."""
    if not is_finished(step_dir) or not (step_dir / "student.pt").is_file():
        return None
    return read_results(step_dir)


@torch.no_grad()
def ensemble_accuracy(models: list[torch.nn.Module], datamodule, device: torch.device) -> float:
    """Top-1 accuracy of the averaged softmax of ``models`` on the test set (the same
    torchmetrics accuracy and averaging as a method's own ensemble metric)."""
    metric = None
    for model in models:
        model.to(device).eval()
    for x, y, *_ in datamodule.test_dataloader():  # (x, y) or (x, y, index)
        x, y = x.to(device), y.to(device)
        probs = ensemble_probabilities([m(x) for m in models])
        metric = metric or accuracy_metrics(probs.shape[1]).to(device)
        metric.update(probs, y)
    return float(metric.compute()["acc"]) if metric is not None else 0.0


def run_step(spec: RunSpec, prep: Prepared, teacher: BuiltModel, step: int, link: dict | None):
    """Run ``step`` of the chain (or reuse it if it finished): (its student, its results).
    ``link``: the step's student model config (None: the run's own student)."""
    declared = spec.method_cls.chain
    sub = step_cfg(spec.cfg, declared.folder, step, link)
    step_dir = Path(sub.paths.output_dir)
    pl.seed_everything(sub.seed, workers=True)
    datamodule = prep.datamodule
    student = build_model(plain(sub.student), datamodule.num_classes, datamodule.input_shape[0], datamodule.input_shape)
    done = finished_step(step_dir)
    if done is not None:
        log.info("%s %d already finished in %s: reusing it", declared.step, step, step_dir)
        student.module.load_state_dict(read_torch(step_dir / "student.pt"))
        return student, done
    teacher_info = {"source": f"{declared.step} {step - 1}", "model": teacher.name} if step > 1 else prep.teacher_info
    step_prep = Prepared(datamodule, student, teacher, teacher_info)
    step_spec = spec.for_step(sub)
    module = make_module(step_spec, step_prep)
    part = {declared.step: step, "chain_step": declared.step}  # "chain_step": a results.json field
    return student, fit_and_report(step_spec, step_prep, module, part, chained=True)


def run_steps(
    teacher: BuiltModel | None, count: int, run_one: Callable[[int, BuiltModel | None], tuple[BuiltModel, dict[str, Any]]]
) -> list[tuple[int, BuiltModel, dict[str, Any]]]:
    """The chain: ``run_one(k, teacher)`` trains (or reuses) run k = 1..count and returns its
    student and results; a frozen copy of that student teaches run k+1. Born-Again's generations
    and a class-incremental run's steps (kdexp.runner.incremental) both go through here."""
    done = []
    for step in range(1, count + 1):
        student, results = run_one(step, teacher)
        done.append((step, student, results))
        teacher = frozen_copy(student)
    return done


def run_chain(spec: RunSpec) -> dict[str, Any]:
    """Train the chain's students in sequence; report each and their ensemble."""
    cfg, cls = spec.cfg, spec.method_cls  # cfg stays unresolved: each run moves its paths
    declared = cls.chain
    prep = prepare(spec)  # validates everything; provides run 0 (the teacher)
    links = cls.chain_links(spec.options)
    done = run_steps(prep.teacher, len(links), lambda k, teacher: run_step(spec, prep, teacher, k, links[k - 1]))
    steps = [  # results are empty on DDP ranks other than 0, which train but do not report
        {declared.step: step, "model": student.name, **results["student"], "teacher_stats": results.get("teacher", {})}
        for step, student, results in done if results
    ]
    students = [student.module for _, student, _ in done]
    if rank_zero_only.rank != 0:
        return {}
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    first_teacher = steps[0].pop("teacher_stats")  # run 0's numbers, as measured by run 1
    for s in steps:
        s.pop("teacher_stats", None)
    chain = {
        "run": {
            **run_header(cfg, prep, prep.student.name),
            cls.members_field: len(links),
            "chain": [prep.teacher.name, *(s["model"] for s in steps)],  # each run's model, teacher first
            "members_field": cls.members_field, "member_key": declared.step, "member_label": declared.folder,
        },
        "teacher": first_teacher,
        "student": steps[-1],
        cls.members_field: [{declared.step: 0, "model": prep.teacher.name, **first_teacher}, *steps],
    }
    if declared.ensemble:  # students of one architecture: their averaged softmax
        chain["ensemble"] = {
            "members": [s[declared.step] for s in steps],
            "acc_top1": ensemble_accuracy(students, prep.datamodule, device),
        }
    chain["comparison"] = comparison(chain["teacher"], chain["student"])
    mark_complete(chain, cfg.paths.output_dir)
    print_results(chain)
    return chain
