"""One run, start to finish: prepare → module → fit and test → results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from kdexp.methods import DistillationModule
from kdexp.performance import finish_cache
from kdexp.phases import phase
from kdexp.resume import run_fingerprint
from kdexp.run.assemble import assemble, complete, publish
from kdexp.run.build import Prepared, init_student, make_module, make_trainer, prepare
from kdexp.run.fit import resume_from, test_best_checkpoint, train_and_test
from kdexp.run.folder import archive_finished, save_models, write_pictures
from kdexp.run_record import earlier_failures


def fit_and_report(
    cfg: DictConfig,
    prep: Prepared,
    module: DistillationModule,
    extra_run: dict[str, Any] | None = None,
    chained: bool = False,
) -> dict[str, Any]:
    """Fit, test, write results.json (accuracies first, then profiles), log HParams, print.
    ``chained``: one run of a chain (a missing ``ckpt_path=last`` starts it afresh)."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prep.datamodule.shuffle_seed = int(cfg.seed)  # each epoch's order from (seed, epoch): exact resume
    trainer = make_trainer(cfg, run_fingerprint(cfg, prep.teacher is not None))
    resumed_from = resume_from(cfg, prep, chained)
    metrics, last_val = train_and_test(cfg, trainer, module, prep, resumed_from)
    best_epoch, best = test_best_checkpoint(trainer, module, prep.datamodule, metrics)
    cache_summary = finish_cache(module)  # after fit and test: the test ran the teacher online
    if not trainer.is_global_zero:
        return {}
    fitted = {
        "metrics": metrics, "last_val": last_val, "best": best, "best_epoch": best_epoch,
        "epochs": trainer.current_epoch, "resumed_from": resumed_from, "teacher_cache": cache_summary,
        "earlier_failures": earlier_failures(output_dir),  # before this attempt's results replace them
    }
    with phase("writing"):
        archive_finished(output_dir)  # only now: a failed attempt leaves a finished run's results alone
        save_models(output_dir, module, prep.datamodule, cfg.data.name, prep.teacher_info)  # weights + cards
    models = module.report_models()
    results = assemble(cfg, prep, module, fitted, extra_run)
    complete(cfg, results, models, trainer.strategy.root_device, prep.datamodule, started)
    write_pictures(models, prep.datamodule, output_dir, trainer.loggers)  # e.g. a soft tree's filters
    publish(results, trainer.loggers, trainer.global_step)
    return results


def run_single(cfg: DictConfig) -> dict[str, Any]:
    """One experiment, start to finish. Returns the results dict (also in results.json)."""
    prep = prepare(cfg)
    pl.seed_everything(cfg.seed, workers=True)  # data order: the same whether the teacher was cached
    module = make_module(cfg, prep)
    init_student(cfg, module)
    return fit_and_report(cfg, prep, module)
