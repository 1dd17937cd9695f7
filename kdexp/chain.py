"""Born-Again chains: generation 0 is the teacher; generation k+1 is a fresh student distilled from
generation k. Each generation is a sub-run (``gen<k>/``) with its own checkpoints, TensorBoard
curves and results.json, so a chain can be inspected and resumed generation by generation; the
chain's results.json adds every generation's numbers and the ensemble of the student generations.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from kdexp.models import BuiltModel, build_model
from kdexp.pipeline import Prepared, fit_and_report, make_module, prepare
from kdexp.results import RESULTS_FILE, comparison, print_results, write_results
from kdexp.run_record import is_finished, read_results

log = logging.getLogger("kdexp")


def generation_cfg(cfg: DictConfig, generation: int, folder: str = "gen") -> DictConfig:
    """The run config of one generation (or step): its own output folder and seed."""
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        sub.paths.output_dir = str(Path(cfg.paths.output_dir) / f"{folder}{generation}")
        sub.seed = int(cfg.seed) + generation  # fresh initialisation for every generation
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


def run_steps(
    cfg: DictConfig,
    n_steps: int,
    step_prep: Callable[[int, DictConfig, BuiltModel | None], Prepared],
    teacher: BuiltModel | None,
    folder: str = "gen",
    finished: Callable[[Path], dict[str, Any] | None] = finished_generation,
    after_step: Callable[[int, DictConfig, Prepared, dict[str, Any], bool], dict[str, Any]] | None = None,
) -> list[tuple[int, dict[str, Any], BuiltModel]]:
    """The chain: step k (1..n) trains ``step_prep(k, its config, teacher)``'s student in the sub-run
    ``<folder><k>/``, and its frozen copy teaches step k+1. A step that already finished (per
    ``finished``) is reloaded from its ``student.pt`` instead of trained again (resume).
    ``after_step(k, config, prepared, results, resumed)`` may add to a step's results.
    Returns (k, results, trained model) per step; results are empty on DDP ranks other than 0."""
    steps = []
    for k in range(1, n_steps + 1):
        sub = generation_cfg(cfg, k, folder)
        step_dir = Path(sub.paths.output_dir)
        pl.seed_everything(sub.seed, workers=True)
        step = step_prep(k, sub, teacher)
        done = finished(step_dir)
        if done is not None:
            log.info("Step %s%d already finished in %s: reusing it", folder, k, step_dir)
            step.student.module.load_state_dict(torch.load(step_dir / "student.pt", weights_only=True))
            results = done
        else:
            extra = {"generation": k} if folder == "gen" else {"step": k}
            results = fit_and_report(sub, step, make_module(sub, step), extra)
        if after_step is not None:
            results = after_step(k, sub, step, results, done is not None)
        steps.append((k, results, step.student))
        teacher = frozen_copy(step.student)
    return steps


def run_chain(cfg: DictConfig) -> dict[str, Any]:
    """Train ``method.generations`` students in sequence; report each and their ensemble."""
    n_gen = int(cfg.method.get("generations", 3))  # cfg stays unresolved: each generation moves paths
    prep = prepare(cfg)  # validates everything; provides generation 0 (the teacher)
    datamodule, in_channels = prep.datamodule, prep.datamodule.input_shape[0]

    def fresh_student(gen: int, sub: DictConfig, teacher: BuiltModel | None) -> Prepared:
        student = build_model(OmegaConf.to_container(sub.student), datamodule.num_classes, in_channels)
        teacher_info = {"source": f"generation {gen - 1}"} if gen > 1 else prep.teacher_info
        return Prepared(datamodule, student, teacher, teacher_info)

    steps = run_steps(cfg, n_gen, fresh_student, prep.teacher)
    generations = [{"generation": gen, **results["student"]} for gen, results, _ in steps if results]
    students = [built.module for _, _, built in steps]

    if rank_zero_only.rank != 0:
        return {}

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    teacher_stats = _first_teacher_stats(cfg)
    chain = {
        "run": {
            "method": "born_again",
            "data": cfg.data.name,
            "teacher": prep.teacher.name,
            "student": prep.student.name,
            "seed": cfg.seed,
            "generations": n_gen,
            "output_dir": cfg.paths.output_dir,
            "teacher_source": prep.teacher_info,
            "complete": True,
            "status": "complete",
        },
        "teacher": teacher_stats,
        "student": generations[-1],
        "generations": [{"generation": 0, **teacher_stats}, *generations],
        "ensemble": {
            "members": [g["generation"] for g in generations],
            "acc_top1": ensemble_accuracy(students, datamodule, device),
        },
    }
    chain["comparison"] = comparison(chain["teacher"], chain["student"])
    write_results(chain, cfg.paths.output_dir)
    print_results(chain)
    return chain


def _first_teacher_stats(cfg: DictConfig) -> dict[str, Any]:
    """Generation 0's numbers, as measured in generation 1's sub-run (its teacher)."""
    gen1 = json.loads((Path(cfg.paths.output_dir) / "gen1" / RESULTS_FILE).read_text())
    return gen1.get("teacher", {})
