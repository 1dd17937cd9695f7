"""Born-Again chains: generation 0 is the teacher; generation k+1 is a fresh student distilled from
generation k. Each generation is a sub-run (``gen<k>/``) with its own checkpoints, TensorBoard
curves and results.json, so a chain can be inspected and resumed generation by generation; the
chain's results.json adds every generation's numbers and the ensemble of the student generations.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from kdexp.methods import METHODS
from kdexp.models import BuiltModel, build_model
from kdexp.pipeline import Prepared, fit_and_report, make_module, prepare
from kdexp.results import RESULTS_FILE, comparison, print_results, write_results
from kdexp.run_record import is_finished, read_results

log = logging.getLogger("kdexp")


def generation_cfg(cfg: DictConfig, generation: int, student: dict[str, Any] | None = None) -> DictConfig:
    """The run config of one generation: its own output folder and seed, and its own student
    model where the link names one (TAKD's assistants)."""
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.paths.output_dir = str(Path(cfg.paths.output_dir) / f"gen{generation}")
        sub.seed = int(cfg.seed) + generation  # fresh initialisation for every generation
        if student is not None:
            sub.student = OmegaConf.create(student)
    OmegaConf.resolve(sub)
    return sub


def frozen_copy(model: BuiltModel) -> BuiltModel:
    """A separate, frozen copy: the next generation's teacher never shares the student's tensors."""
    return BuiltModel(
        copy.deepcopy(model.module).eval().requires_grad_(False),
        model.name,
        model.stages,
        model.classifier,
        model.cfg,
    )


def finished_generation(gen_dir: Path) -> dict[str, Any] | None:
    """The results of a generation that already completed (for resuming a chain), or None."""
    if not is_finished(gen_dir) or not (gen_dir / "student.pt").is_file():
        return None
    return read_results(gen_dir)


@torch.no_grad()
def ensemble_accuracy(models: list[torch.nn.Module], datamodule, device: torch.device) -> float:
    """Top-1 accuracy of the averaged softmax of ``models`` on the test set."""
    correct = total = 0
    for model in models:
        model.to(device).eval()
    for x, y in datamodule.test_dataloader():
        x, y = x.to(device), y.to(device)
        probs = torch.stack([m(x).softmax(1) for m in models]).mean(0)
        correct += (probs.argmax(1) == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)


def run_chain(cfg: DictConfig) -> dict[str, Any]:
    """Train the method's links in sequence, each distilled from the one before (Born-Again:
    ``method.generations`` copies of the student; TAKD: the assistants, then the student);
    report each, and for Born-Again the ensemble of the student generations."""
    prep = prepare(cfg)  # validates everything; provides generation 0 (the teacher)
    method_cls = METHODS[cfg.method.name]
    links = method_cls.chain_links(OmegaConf.to_container(cfg.method, resolve=True))
    n_gen = len(links)  # cfg stays unresolved: each generation moves paths
    teacher = prep.teacher
    datamodule, in_channels = prep.datamodule, prep.datamodule.input_shape[0]
    generations: list[dict[str, Any]] = []
    students: list[torch.nn.Module] = []
    for gen, link_student in enumerate(links, start=1):
        sub = generation_cfg(cfg, gen, link_student)
        gen_dir = Path(sub.paths.output_dir)
        pl.seed_everything(sub.seed, workers=True)
        student = build_model(OmegaConf.to_container(sub.student), datamodule.num_classes, in_channels)
        done = finished_generation(gen_dir)
        if done is not None:
            log.info("Generation %d already finished in %s: reusing it", gen, gen_dir)
            student.module.load_state_dict(torch.load(gen_dir / "student.pt", weights_only=True))
            results = done
        else:
            teacher_info = {"source": f"generation {gen - 1}", "model": teacher.name} if gen > 1 else prep.teacher_info
            gen_prep = Prepared(datamodule, student, teacher, teacher_info)
            results = fit_and_report(sub, gen_prep, make_module(sub, gen_prep), {"generation": gen})
        if results:  # empty on DDP ranks other than 0, which train but do not report
            generations.append({"generation": gen, "model": student.name, **results["student"]})
        students.append(student.module)
        teacher = frozen_copy(student)

    if rank_zero_only.rank != 0:
        return {}

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    teacher_stats = _first_teacher_stats(cfg)
    chain = {
        "run": {
            "method": cfg.method.name,
            "data": cfg.data.name,
            "teacher": prep.teacher.name,
            "student": prep.student.name,
            "seed": cfg.seed,
            "generations": n_gen,
            "chain": [prep.teacher.name, *(g["model"] for g in generations)],
            "output_dir": cfg.paths.output_dir,
            "teacher_source": prep.teacher_info,
            "complete": True,
            "status": "complete",
        },
        "teacher": teacher_stats,
        "student": generations[-1],
        "generations": [{"generation": 0, "model": prep.teacher.name, **teacher_stats}, *generations],
    }
    if getattr(method_cls, "chain_ensemble", False):  # copies of one architecture (Born-Again): their averaged softmax
        chain["ensemble"] = {
            "members": [g["generation"] for g in generations],
            "acc_top1": ensemble_accuracy(students, datamodule, device),
        }
    chain["comparison"] = comparison(chain["teacher"], chain["student"])
    write_results(chain, cfg.paths.output_dir)
    print_results(chain)
    return chain


def _first_teacher_stats(cfg: DictConfig) -> dict[str, Any]:
    """Generation 0's numbers, as measured in generation 1's sub-run (its teacher)."""
    gen1 = json.loads((Path(cfg.paths.output_dir) / "gen1" / RESULTS_FILE).read_text())
    return gen1.get("teacher", {})
