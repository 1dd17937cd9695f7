"""One run, start to finish: prepare → module → fit and test → results."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from kdexp.errors import SetupError
from kdexp.methods import DistillationModule
from kdexp.teacher.outputs import finish_cache
from kdexp.phases import phase
from kdexp.runner.resume import run_fingerprint
from kdexp.runner.assemble import assemble, complete, publish
from kdexp.runner.build import Prepared, init_student, make_module, make_trainer, prepare
from kdexp.runner.spec import RunSpec
from kdexp.runner.fit import resume_from, test_best_checkpoint, train_and_test
from kdexp.runner.folder import archive_finished, save_models, write_pictures
from kdexp.run_record import earlier_failures, is_finished, read_results

log = logging.getLogger("kdexp")


def fit_and_report(
    spec: RunSpec,
    prep: Prepared,
    module: DistillationModule,
    extra_run: dict[str, Any] | None = None,
    chained: bool = False,
) -> dict[str, Any]:
    """Fit, test, write results.json (accuracies first, then profiles), log HParams, print.
    ``chained``: one run of a chain (a missing ``ckpt_path=last`` starts it afresh)."""
    cfg = spec.cfg
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prep.datamodule.shuffle_seed = int(cfg.seed)  # each epoch's order from (seed, epoch): exact resume
    trainer = make_trainer(cfg, run_fingerprint(cfg, prep.teacher is not None))
    resumed_from = resume_from(spec, prep, chained)
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
    complete(spec, results, models, trainer.strategy.root_device, prep.datamodule, started)
    write_pictures(models, prep.datamodule, output_dir, trainer.loggers)  # e.g. a soft tree's filters
    publish(results, trainer.loggers, trainer.global_step)
    return results


def finished_run(spec: RunSpec) -> dict[str, Any] | None:
    """``ckpt_path`` whose checkpoint has already trained every epoch of ``trainer.max_epochs``:
    there is nothing to train. In the folder of that finished run: its results, kept as they are
    (None otherwise: the run trains). A finished checkpoint without its run's results here is a
    configuration error (an extension needs a larger ``trainer.max_epochs``)."""
    cfg = spec.cfg
    if not cfg.get("ckpt_path"):
        return None
    try:
        path, epoch = spec.ckpt_path(), spec.ckpt_epoch()  # this run's checkpoint? (read once, kept)
    except (ValueError, FileNotFoundError) as err:
        raise SetupError(str(err)) from None
    max_epochs = int(cfg.trainer.max_epochs)
    if path is None or epoch is None or epoch + 1 < max_epochs:
        return None
    output_dir = Path(cfg.paths.output_dir)
    if is_finished(output_dir) and Path(path).resolve().is_relative_to(output_dir.resolve()):
        log.info(
            "This run is already complete: its checkpoint %s has trained all %d epochs (trainer.max_epochs=%d), "
            "so there is nothing to train; its results are kept as they are (%s). To train it further, give a "
            "larger trainer.max_epochs", path, epoch + 1, max_epochs, output_dir / "results.json",
        )
        return read_results(output_dir)
    raise SetupError(
        f"ckpt_path={cfg.ckpt_path} ({path}) has already trained all {epoch + 1} epochs of trainer.max_epochs="
        f"{max_epochs}: there is nothing to resume. Give a larger trainer.max_epochs to extend it, or start a new "
        "run from its weights with init_weights=<that checkpoint>"
    )


def run_single(spec: RunSpec) -> dict[str, Any]:
    """One experiment, start to finish. Returns the results dict (also in results.json)."""
    finished = finished_run(spec)  # ckpt_path=last in a finished run's folder: nothing to train
    if finished is not None:
        return finished
    prep = prepare(spec)
    pl.seed_everything(spec.cfg.seed, workers=True, verbose=False)  # data order: the same whether the teacher was cached
    module = make_module(spec, prep)
    init_student(spec.cfg, module)
    return fit_and_report(spec, prep, module)
