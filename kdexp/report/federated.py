"""The federated part of ``kdexp-report``: runs of the federated methods compared over seeds
(final accuracy, total bytes sent, rounds to the target accuracy). Writes ``federated.md`` beside
report.md."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from kdexp.report.groups import finished_groups, mean_std, section_table
from kdexp.tools.files import write_atomic

HEADERS = ["data", "model", "method", "split", "clients", "rounds", "seeds", "final acc (%)", "total bytes", "accuracy of", "rounds to target"]
CAPTION = ("Final accuracy: the server model's test accuracy after the last round, or the mean of the clients' models "
           "for methods without one; mean ± std over seeds. Bytes: every tensor sent up and down, all rounds.")


def federated_rows(runs: list[dict[str, Any]], group_key) -> list[dict[str, Any]]:
    """One row per group of finished federated runs (``group_key`` as kdexp-report's)."""
    rows = []
    for key, members in finished_groups(runs, "federated", group_key):
        fed = [m["federated"] for m in members]
        accs = [100 * f["final_accuracy"] for f in fed]
        rows.append({
            "data": key[0], "model": key[2], "method": key[3],
            "split": "IID" if fed[0]["iid"] else f"Dirichlet α={fed[0]['alpha']:g}",
            "clients": fed[0]["clients"], "rounds": fed[0]["rounds"], "n": len(members),
            "acc": mean_std(accs),
            "bytes": statistics.fmean(f["total_bytes"] for f in fed), "accuracy_of": fed[0]["accuracy_of"],
            "target": [f["rounds_to_target"] for f in fed], "target_acc": fed[0]["target_acc"],
        })
    return rows


def _cells(row: dict[str, Any]) -> list[str]:
    mean, std = row["acc"]
    target = "—" if row["target_acc"] is None else (
        f"{100 * row['target_acc']:g}%: " + ", ".join("—" if t is None else str(t) for t in row["target"]))
    return [row["data"], row["model"], row["method"], row["split"], str(row["clients"]), str(row["rounds"]), str(row["n"]),
            f"{mean:.2f} ± " + ("—" if std is None else f"{std:.2f}"), f"{row['bytes'] / 1e6:.2f} MB", row["accuracy_of"], target]


def write_federated_report(runs: list[dict[str, Any]], out: Path, group_key, console: Console) -> list[Path]:
    """federated.md in ``out``, where any run is federated; the table on the console."""
    rows = federated_rows(runs, group_key)
    if not rows:
        return []
    lines = ["**Federated runs**", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---" if i < 4 else "---:" for i in range(len(HEADERS))) + "|"]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    write_atomic(out / "federated.md", "\n".join(lines + ["", CAPTION]) + "\n")
    console.print(section_table("Federated runs (mean ± std over seeds)", CAPTION, HEADERS, 4, [_cells(row) for row in rows]))
    return [out / "federated.md"]
