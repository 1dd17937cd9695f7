"""The pruning callback: a run that is an Optuna trial (its sweep hands it the trial through
``KDEXP_OPTUNA_TRIAL``, kdexp.tuning.study) reports its validation metric after every epoch and
stops training when the study's pruner says the trial cannot catch up. The run then finishes as
usual (tested, recorded) and the sweeper records the trial as pruned; ``<run>/optuna_trial.json``
says so for kdexp-report. Outside an Optuna sweep it does nothing (and imports no Optuna).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from kdexp.tools.files import write_json

log = logging.getLogger("kdexp")
TRIAL_ENV = "KDEXP_OPTUNA_TRIAL"  # = kdexp.tuning.study.TRIAL_ENV (that module imports Optuna's side)
PRUNED_AT = "kdexp_pruned_epoch"  # = kdexp.tuning.study.PRUNED_AT
TRIAL_FILE = "optuna_trial.json"  # in the run folder: the trial and, if pruned, the epoch


class OptunaPruning(pl.Callback):
    """Report ``monitor`` (default ``val/acc``) to this run's trial each epoch; stop when pruned.

    ``output_dir``: the run folder, where ``optuna_trial.json`` records the trial."""

    def __init__(self, monitor: str = "val/acc", output_dir: str | None = None) -> None:
        self.monitor, self.output_dir = monitor, output_dir
        self.link = json.loads(os.environ[TRIAL_ENV]) if os.environ.get(TRIAL_ENV) else None
        self.trial: Any = None

    def _trial(self) -> Any:
        if self.trial is None:
            import optuna

            storage = optuna.storages.RDBStorage(self.link["storage"], engine_kwargs=_engine(self.link["storage"]))
            pruner = self.link.get("pruner")
            if pruner:  # the sweep's pruner (a study's pruner is not stored with it)
                from hydra.utils import instantiate

                pruner = instantiate(pruner)
            study = optuna.load_study(study_name=self.link["study"], storage=storage, pruner=pruner or None)
            (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == self.link["trial"]]
            self.trial = optuna.trial.Trial(study, frozen._trial_id)
            self._record({})
        return self.trial

    def _record(self, extra: dict[str, Any]) -> None:
        if self.output_dir:
            write_json(Path(self.output_dir) / TRIAL_FILE, {**self.link, **extra})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.link is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # no validation this epoch
            return
        prune = False
        if trainer.is_global_zero:  # rank 0 reports; every rank stops with it
            trial, epoch = self._trial(), trainer.current_epoch
            trial.report(float(value), step=epoch)
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr(PRUNED_AT, epoch)
                self._record({"state": "pruned", "pruned_epoch": epoch, "monitor": self.monitor, "value": float(value)})
                log.info("Optuna pruned trial %d after epoch %d (%s %.4f): training stops here",
                         trial.number, epoch + 1, self.monitor, float(value))
        if trainer.strategy.reduce_boolean_decision(prune, all=False):
            trainer.should_stop = True


def _engine(url: str) -> dict[str, Any] | None:
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None
