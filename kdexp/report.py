"""``kdexp-report DIR...``: gather finished runs → one table (mean ± std over seeds), CSV, plots.

Runs are grouped by everything but the seed: data, teacher, student, method, the method's options
and any other overrides, so ``kdexp -m method=vanilla,kd seed=0,1,2`` reads as one row per
method. Failed runs (their results.json says ``status: failed``) are counted and listed.
Writes ``report.md``, ``report.csv``, ``acc_vs_latency.png`` and ``acc_vs_size.png`` next to the
runs (the first folder given, or ``--out``).
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

from kdexp.results import RESULTS_FILE, format_value

KEY_FIELDS = ("data", "teacher", "student", "method", "options", "setting")
# Overrides that are columns already, or vary within a row.
_GROUP_CHOICES = ("data", "teacher", "student", "method", "seed", "experiment")

# (column, path in results.json): averaged over the seeds of a row.
MEAN_STD = {
    "student_acc_best": ("student", "acc_top1_best_epoch"),
    "student_acc_last": ("student", "acc_top1"),
}
MEAN = {  # averaged over seeds (timings: the median)
    "teacher_acc": ("teacher", "acc_top1"),
    "student_params": ("student", "params"),
    "student_macs": ("student", "macs"),
    "student_latency_ms": ("student", "latency_ms_b1"),
    "teacher_params": ("teacher", "params"),
    "teacher_latency_ms": ("teacher", "latency_ms_b1"),
    "speedup": ("comparison", "speedup_latency_b1"),
}


# --- gathering ---------------------------------------------------------------------------------
def find_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every run's results.json under ``paths`` (files or folders), with its options attached.

    Born-Again generations (``gen<k>/``) are parts of their chain's run, not runs of their own.
    """
    runs = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
        for file in files:
            try:
                results = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as err:
                print(f"kdexp-report: skipping unreadable {file}: {err}", file=sys.stderr)
                continue
            run = results.get("run", {})
            if "generation" in run or "step" in run:  # a chain's generation or incremental step
                continue
            results["_dir"] = str(file.parent)
            method_options, overrides = run_options(file.parent)
            results["_options"] = " ".join(method_options + overrides)
            results["_setting"] = " ".join(o for o in overrides if not o.startswith("method."))
            runs.append(results)
    return runs


def run_options(run_dir: Path) -> tuple[list[str], list[str]]:
    """What sets a run apart besides models and seed: its method options and other overrides."""
    from omegaconf import OmegaConf

    parts, overrides_list = [], []
    config = run_dir / ".hydra" / "config.yaml"
    if config.is_file():
        method = OmegaConf.to_container(OmegaConf.load(config).get("method", {}), resolve=False)
        parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in method.items() if k != "name"]
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        for item in OmegaConf.to_container(OmegaConf.load(overrides)):
            key = item.split("=", 1)[0].lstrip("+~")
            if key.split(".")[0] in _GROUP_CHOICES or key.startswith(("hydra.", "paths.")):
                continue
            overrides_list.append(item)
    return parts, overrides_list


def failed(results: dict[str, Any]) -> bool:
    return results.get("run", {}).get("status") == "failed"


# --- summarising -------------------------------------------------------------------------------
def group_key(results: dict[str, Any]) -> tuple[str, ...]:
    run = results["run"]
    teacher = "—" if run.get("method") == "vanilla" else str(run.get("teacher") or "—")
    return (
        str(run.get("data")), teacher, str(run.get("student")), str(run.get("method")),
        results["_options"], results["_setting"],
    )


def _get(results: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = results.get(path[0], {}).get(path[1])
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group: seeds, failures, mean/std of accuracies, means of the rest.

    Accuracies are fractions. ``delta_vs_vanilla`` is the last-epoch mean minus that of the
    vanilla row with the same data, student and non-method overrides, where one exists.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for results in runs:
        groups[group_key(results)].append(results)
    rows = []
    for key, members in sorted(groups.items()):
        done = [m for m in members if not failed(m)]
        row: dict[str, Any] = dict(zip(KEY_FIELDS, key))
        row["n"] = len(done)
        row["seeds"] = sorted(m["run"].get("seed") for m in done)
        row["failed"] = len(members) - len(done)
        row["errors"] = [f"{m['_dir']}: {m['run'].get('error', '')}" for m in members if failed(m)]
        for name, path in MEAN_STD.items():
            values = [v for m in done if (v := _get(m, path)) is not None]
            row[f"{name}_mean"] = statistics.fmean(values) if values else None
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0 if values else None
        for name, path in MEAN.items():
            values = [v for m in done if (v := _get(m, path)) is not None]
            # Timings: the median, which one run on a busy machine cannot drag away.
            average = statistics.median if "latency" in name or name == "speedup" else statistics.fmean
            row[name] = average(values) if values else None
        rows.append(row)
    for row in rows:
        base = _baseline(row, rows)
        ok = base is not None and row["student_acc_last_mean"] is not None
        row["delta_vs_vanilla"] = row["student_acc_last_mean"] - base if ok else None
    return rows


def _baseline(row: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    if row["method"] == "vanilla":
        return None
    for other in rows:
        if (
            other["method"] == "vanilla"
            and (other["data"], other["student"]) == (row["data"], row["student"])
            and other["setting"] == row["setting"]
        ):
            return other["student_acc_last_mean"]
    return None


# --- formatting --------------------------------------------------------------------------------
def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _num(value: float | None, kind: str) -> str:
    """Report cells: a signed difference in points, a one-decimal ratio, else as run tables do."""
    if value is None:
        return "—"
    if kind == "pts":
        return f"{100 * value:+.2f}"
    if kind == "x":
        return f"{value:.1f}×"
    return format_value(value, kind)


HEADERS = [
    "teacher → student", "method", "options", "seeds", "student acc best epoch (%)",
    "student acc last epoch (%)", "Δ vs vanilla (pts)", "teacher acc (%)", "student params",
    "student MACs", "student latency b=1 (ms)", "speed-up",
]
SHORT_HEADERS = [  # the console table: narrow enough for a terminal
    "teacher → student", "method", "options", "n", "best ep. %", "last ep. %", "Δ pts",
    "teacher %", "params", "MACs", "ms b=1", "speed-up",
]


def shared_options(rows: list[dict[str, Any]]) -> list[str]:
    """Options every row has (e.g. a sweep-wide trainer.max_epochs=2): said once, in the caption."""
    sets = [set(row["options"].split()) for row in rows]
    return sorted(set.intersection(*sets)) if len(rows) > 1 else []


def row_cells(row: dict[str, Any], shared: list[str] = ()) -> list[str]:
    models = row["student"] if row["teacher"] == "—" else f"{row['teacher']} → {row['student']}"
    seeds = str(row["n"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
    options = " ".join(o for o in row["options"].split() if o not in shared)
    return [
        models,
        row["method"],
        options or "—",
        seeds,
        _pct(row["student_acc_best_mean"], row["student_acc_best_std"]),
        _pct(row["student_acc_last_mean"], row["student_acc_last_std"]),
        _num(row["delta_vs_vanilla"], "pts"),
        _pct(row["teacher_acc"]) if row["teacher"] != "—" else "—",
        _num(row["student_params"], "int"),
        _num(row["student_macs"], "macs"),
        _num(row["student_latency_ms"], "ms"),
        _num(row["speedup"], "x"),
    ]


def _title(rows: list[dict[str, Any]]) -> str:
    datasets = sorted({row["data"] for row in rows})
    return "kdexp runs on " + ", ".join(datasets) + " (accuracy: mean ± std over seeds)"


def _caption(shared: list[str]) -> str:
    return ("All rows: " + " ".join(shared) + ". " if shared else "") + (
        "best ep.: test accuracy at the epoch of best validation accuracy; Δ: last epoch vs the "
        "vanilla student; speed-up: teacher latency / student latency at batch 1."
    )


def rows_table(rows: list[dict[str, Any]]) -> Table:
    shared = shared_options(rows)
    table = Table(title=_title(rows), caption=_caption(shared))
    for header in SHORT_HEADERS:
        numeric = header not in SHORT_HEADERS[:3]
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric, min_width=None if numeric else 8)
    for row in rows:
        table.add_row(*row_cells(row, shared), style="red" if row["failed"] and not row["n"] else None)
    return table


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    shared = shared_options(rows)
    lines = [f"**{_title(rows)}**", "", "| " + " | ".join(HEADERS) + " |"]
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADERS))) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row_cells(row, shared)) + " |" for row in rows]
    lines += ["", _caption(shared)]
    errors = [e for row in rows for e in row["errors"]]
    if errors:
        lines += ["", "Failed runs:", ""] + [f"- {e}" for e in errors]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "seeds": " ".join(map(str, row["seeds"])), "errors": " | ".join(row["errors"])} for row in rows)


def write_plots(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Student accuracy vs latency and vs parameters; teachers as stars, vanilla rows as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for x_key, t_key, x_label, name in (
        ("student_latency_ms", "teacher_latency_ms", "latency at batch 1 (ms, log scale)", "acc_vs_latency.png"),
        ("student_params", "teacher_params", "parameters (log scale)", "acc_vs_size.png"),
    ):
        points = [r for r in rows if r[x_key] is not None and r["student_acc_last_mean"] is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for row in points:
            vanilla = row["method"] == "vanilla"
            ax.errorbar(
                row[x_key], 100 * row["student_acc_last_mean"], yerr=100 * (row["student_acc_last_std"] or 0),
                fmt="s" if vanilla else "o", color="tab:gray" if vanilla else None, capsize=3,
            )
            label = "alone (vanilla)" if vanilla else row["method"]
            ax.annotate(label, (row[x_key], 100 * row["student_acc_last_mean"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        teachers: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if r["teacher"] != "—" and r[t_key] is not None and r["teacher_acc"] is not None:
                teachers[r["teacher"]].append((r[t_key], r["teacher_acc"]))
        for teacher, points_t in sorted(teachers.items()):  # one star per teacher
            x = statistics.median(p[0] for p in points_t)
            acc = statistics.median(p[1] for p in points_t)
            ax.plot(x, 100 * acc, "*", color="tab:red", markersize=14)
            ax.annotate(f"teacher {teacher}", (x, 100 * acc), fontsize=8, xytext=(4, -10), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("student top-1 accuracy, last epoch (%)")
        ax.set_title(_title(rows), fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(folder / name)
    return written


def write_report(paths: list[Path], out: Path | None = None, console: Console | None = None) -> list[dict[str, Any]]:
    """Gather, print, and write report.md, report.csv and the plots into ``out``."""
    runs = find_runs(paths)
    if not runs:
        return []
    rows = summarise(runs)
    out = out or (paths[0] if paths[0].is_dir() else paths[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(rows_markdown(rows))
    write_csv(rows, out / "report.csv")
    plots = write_plots(rows, out)
    if console is None:  # logs and pipes get the full width; a terminal wraps the text columns
        console = Console() if Console().is_terminal else Console(width=200)
    console.print(rows_table(rows))
    from kdexp.incremental.report import write_incremental_report  # class-incremental runs, if any

    plots += write_incremental_report(runs, out, group_key, console)
    for error in (e for row in rows for e in row["errors"]):
        console.print(f"[red]failed:[/] {error}")
    console.print(f"Report: {out / 'report.md'}, {out / 'report.csv'}" + "".join(f", {p}" for p in plots))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or results.json files")
    parser.add_argument("--out", type=Path, help="where report.md/.csv and the plots go (default: the first folder)")
    args = parser.parse_args(argv)
    if not write_report(args.paths, args.out):
        print(f"kdexp-report: no {RESULTS_FILE} under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
