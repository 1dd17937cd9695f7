"""A federated run's numbers: the ``federated`` section of results.json (per-round arrays, final
accuracy, rounds to the target, bytes), the printed per-round table, and the clients' class
histograms (a table in the run folder, a picture for TensorBoard)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.rounds import RoundsState

ARRAYS = (  # per-round arrays in results.json, from the rounds' records
    "accuracy", "global_val_acc", "global_test_acc", "client_acc_mean", "client_acc_min", "client_acc_max",
    "client_loss_mean", "bytes_up", "bytes_down", "bytes_total", "wall_s",
)


def rounds_to_target(accuracies: list[float], target: float | None) -> int | None:
    """The first round (1-based) whose accuracy reaches ``target``; None if none does (or no target)."""
    if target is None:
        return None
    return next((i for i, acc in enumerate(accuracies, start=1) if acc >= float(target)), None)


def federated_section(exp: FederatedExperiment, state: RoundsState) -> dict[str, Any]:
    """results.json's ``federated``: the settings, per-round arrays, the final numbers."""
    history, settings = state.history, exp.settings
    decl = exp.method.cls.federated
    last = history[-1]
    arrays = {key: [r[key] for r in history] for key in ARRAYS}
    return {
        "engine": settings.engine,
        "clients": settings.clients,
        "clients_per_round": settings.per_round,
        "alpha": None if settings.iid else float(settings.alpha),
        "iid": settings.iid,
        "rounds": len(history),
        "local_epochs": settings.local_epochs,
        "public_size": settings.public_size,
        "client_models": [exp.model_cfg(k)["name"] for k in range(settings.clients)],
        "shares": decl.shares,
        "accuracy_of": "server model" if decl.global_model else "mean of the clients' models",
        "final_accuracy": last["accuracy"],
        "final_global_test_acc": last["global_test_acc"],
        "final_client_acc_mean": last["client_acc_mean"],
        "target_acc": settings.target_acc,
        "rounds_to_target": rounds_to_target(arrays["accuracy"], settings.target_acc),
        "total_bytes": last["bytes_total"],
        "bytes_up_total": sum(arrays["bytes_up"]),
        "bytes_down_total": sum(arrays["bytes_down"]),
        "client_samples": [len(rows) for rows in exp.split.clients],
        "client_class_histograms": class_histograms(exp).tolist(),
        "per_round": {**arrays, "round": [r["round"] for r in history], "clients": [r["clients"] for r in history],
                      "client_acc": [r["client_acc"] for r in history]},
    }


def student_section(exp: FederatedExperiment, state: RoundsState) -> dict[str, Any]:
    """results.json's ``student`` (what kdexp-report and a sweeper read): the final accuracy, the
    final validation accuracy (the server model's, else the clients' mean) and the model's size."""
    last = state.history[-1]
    val = last["global_val_acc"] if last["global_val_acc"] is not None else last["client_val_acc_mean"]
    params = sum(p.numel() for p in exp.new_module(None).student.parameters())
    return {"acc_top1": last["accuracy"], "val_acc_top1": val, "params": params}


def class_histograms(exp: FederatedExperiment) -> np.ndarray:
    return exp.split.histograms(exp.train[1].numpy(), exp.num_classes)


def histogram_table(exp: FederatedExperiment) -> Table:
    """Each client's images per class (the split the run trained on)."""
    counts = class_histograms(exp)
    table = Table(title=f"images per client and class ({exp.settings.clients} clients, "
                        + ("IID" if exp.settings.iid else f"Dirichlet α={exp.settings.alpha:g}") + ")")
    table.add_column("client")
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    for k, row in enumerate(counts):
        table.add_row(str(k), *[str(int(v)) for v in row], str(int(row.sum())))
    table.caption = f"public (unlabelled) set: {exp.settings.public_size} images; labels 0-{counts.shape[1] - 1}"
    return table


def histogram_figure(exp: FederatedExperiment) -> Any:
    """Stacked bars: each client's images per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = class_histograms(exp)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(counts) + 2), 3.5))
    bottom = np.zeros(len(counts))
    colours = plt.get_cmap("tab20")
    for c in range(counts.shape[1]):
        ax.bar(range(len(counts)), counts[:, c], bottom=bottom, color=colours(c % 20), label=str(c))
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("images")
    ax.set_xticks(range(len(counts)))
    ax.legend(title="class", fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(histogram_table(exp).title, fontsize=9)
    fig.tight_layout()
    return fig


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _bytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{int(value)} B"


def rounds_table(results: dict[str, Any]) -> Table:
    """The per-round summary a federated run prints."""
    run, fed = results["run"], results["federated"]
    per = fed["per_round"]
    table = Table(title=f"{run['method']} on {run['data']}: {fed['clients']} clients "
                        + ("(IID)" if fed["iid"] else f"(Dirichlet α={fed['alpha']:g})") + f", engine {fed['engine']}")
    for name in ("round", "global val %", "global test %", "clients mean %", "min %", "max %", "bytes up", "bytes down", "bytes total", "wall s"):
        table.add_column(name, justify="left" if name == "round" else "right")
    for i, round_ in enumerate(per["round"]):
        table.add_row(
            str(round_), _pct(per["global_val_acc"][i]), _pct(per["global_test_acc"][i]), _pct(per["client_acc_mean"][i]),
            _pct(per["client_acc_min"][i]), _pct(per["client_acc_max"][i]), _bytes(per["bytes_up"][i]),
            _bytes(per["bytes_down"][i]), _bytes(per["bytes_total"][i]), f"{per['wall_s'][i]:.1f}",
        )
    target = fed["rounds_to_target"]
    table.caption = (
        f"final accuracy {_pct(fed['final_accuracy'])}% ({fed['accuracy_of']}); "
        + (f"target {_pct(fed['target_acc'])}% reached in round {target}; " if target else
           f"target {_pct(fed['target_acc'])}% not reached; " if fed["target_acc"] else "")
        + f"sent {_bytes(fed['total_bytes'])} in total ({_bytes(fed['bytes_up_total'])} up, "
        f"{_bytes(fed['bytes_down_total'])} down: {fed['shares']}). Clients are scored on the test set."
    )
    return table
