"""A study's record beside its sweep: ``optimization_results.yaml`` (best values), ``trials.csv``
(every trial: number, state, value, values, run folder) and Optuna's own pictures, drawn with its
matplotlib backend: ``optuna_history.png`` (optimisation history) and ``optuna_importances.png``
(parameter importances, PED-ANOVA: no scikit-learn needed)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdexp.tools.files import write_atomic

log = logging.getLogger("kdexp")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial of the study (every process's), queued ones left out."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            "outcome": t.user_attrs.get("kdexp_outcome", ""), "pruned_epoch": t.user_attrs.get("kdexp_pruned_epoch", ""),
            "seconds": seconds, "run_dir": t.user_attrs.get("kdexp_run_dir", ""),
            **{f"params.{k}": v for k, v in t.params.items()},
        })
    return rows


def write_results(study: Any, folder: Path, storage: str) -> dict[str, Any]:
    """optimization_results.yaml and trials.csv; returns what the yaml holds."""
    from optuna.trial import TrialState

    rows = trial_rows(study)
    states = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState if s != TrialState.WAITING}
    summary: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": storage,
                               "direction": study.direction.name.lower(), "trials": states}
    if states["COMPLETE"]:
        best = study.best_trial
        summary.update(best_params=dict(best.params), best_value=best.value, best_trial=best.number)
    write_atomic(folder / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(summary)))
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(folder / "trials.csv", text.getvalue())
    return summary


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs (what it can draw: the
    importances need two finished trials and a parameter that varies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as vis

    written = []
    plots = {
        "optuna_history.png": lambda: vis.plot_optimization_history(study),
        "optuna_importances.png": lambda: vis.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
    }
    for name, draw in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for its matplotlib backend
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few trials for this picture
                log.info("Optuna: no %s (%s)", name, err)
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        data = io.BytesIO()
        figure.savefig(data, format="png", dpi=120)
        plt.close(figure)
        written.append(write_atomic(folder / name, data.getvalue()))
    with contextlib.suppress(Exception):
        plt.close("all")
    return written
