"""``kdexp-report DIR...``: gather finished runs' results.json → one table, mean ± std over seeds.

Runs are grouped by everything but the seed (data, teacher, student, method and its options), so
a sweep such as ``kdexp -m method=vanilla,kd seed=0,1,2`` reads as one row per method.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdexp.results import RESULTS_FILE

COLUMNS = [  # (header, getter path in results.json)
    ("student acc", ("student", "acc_top1")),
    ("teacher acc", ("teacher", "acc_top1")),
    ("agreement", ("comparison", "agreement_top1")),
]


def find_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every results.json under ``paths`` (files or folders), with its method options attached."""
    runs = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
        for file in files:
            results = json.loads(file.read_text())
            results["_method_options"] = _method_options(file.parent)
            runs.append(results)
    return runs


def _method_options(run_dir: Path) -> str:
    """The run's method options from Hydra's saved config, e.g. 'T=4 ce=0.1 kd=0.9'."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return ""
    from omegaconf import OmegaConf

    method = OmegaConf.to_container(OmegaConf.load(config).get("method", {}), resolve=False)
    return " ".join(f"{k}={v}" for k, v in method.items() if k != "name")


def group_key(results: dict[str, Any]) -> tuple[str, ...]:
    run = results["run"]
    teacher = run.get("teacher") if run["method"] != "vanilla" else "—"
    return (run["data"], str(teacher), run["student"], run["method"], results["_method_options"])


def _get(results: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = results.get(path[0], {}).get(path[1])
    return float(value) if isinstance(value, (int, float)) else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group: n, seeds, and mean/std of each column (fractions, not percent)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for results in runs:
        groups[group_key(results)].append(results)
    rows = []
    for key, members in sorted(groups.items()):
        row: dict[str, Any] = dict(zip(("data", "teacher", "student", "method", "options"), key))
        row["n"] = len(members)
        row["seeds"] = sorted(m["run"].get("seed") for m in members)
        for header, path in COLUMNS:
            values = [v for m in members if (v := _get(m, path)) is not None]
            row[f"{header} mean"] = statistics.fmean(values) if values else None
            row[f"{header} std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        rows.append(row)
    return rows


def rows_table(rows: list[dict[str, Any]]) -> Table:
    """One row per setting; columns that every row shares (e.g. the dataset) move to the title."""
    datasets = sorted({row["data"] for row in rows})
    title = "kdexp runs" + (f" on {datasets[0]}" if len(datasets) == 1 else "")
    table = Table(title=f"{title} (accuracy %: mean ± std over seeds)")
    if len(datasets) > 1:
        table.add_column("data")
    for header in ("teacher → student", "method", "n"):
        table.add_column(header, justify="right" if header == "n" else "left")
    for header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        models = row["student"] if row["teacher"] == "—" else f"{row['teacher']} → {row['student']}"
        method = row["method"] + (f"\n[dim]{row['options']}[/]" if row["options"] else "")
        cells = ([row["data"]] if len(datasets) > 1 else []) + [models, method, str(row["n"])]
        for header, _ in COLUMNS:
            mean, std = row[f"{header} mean"], row[f"{header} std"]
            cells.append("—" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}")
        table.add_row(*cells)
    return table


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or results.json files")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        print(f"kdexp-report: no {RESULTS_FILE} under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    rows = summarise(runs)
    Console().print(rows_table(rows))
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
