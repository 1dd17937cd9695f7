"""A run's final numbers: teacher vs student, as results.json, a Rich table and a TensorBoard row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdexp.console import ascii_safe_streams

RESULTS_FILE = "results.json"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def comparison(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]:
    """How the student compares: >1 means the student is smaller / faster by that factor."""
    acc_t, acc_s = teacher.get("acc_top1"), student.get("acc_top1")
    return {
        "acc_gap_top1": None if acc_t is None or acc_s is None else acc_t - acc_s,
        "compression_params": _ratio(teacher.get("params"), student.get("params")),
        "compression_size": _ratio(teacher.get("size_mb"), student.get("size_mb")),
        "macs_ratio": _ratio(teacher.get("macs"), student.get("macs")),
        "speedup_latency_b1": _ratio(teacher.get("latency_ms_b1"), student.get("latency_ms_b1")),
        "speedup_throughput": _ratio(student.get("throughput_ips"), teacher.get("throughput_ips")),
    }


def write_results(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``results.json`` atomically (a crash mid-write leaves the previous version)."""
    from kdexp.run_record import write_json  # the one atomic writer (fsync, rename)

    return write_json(Path(output_dir) / RESULTS_FILE, results)


# The HParams table shows its first metrics by default: the ones a distillation run is judged by.
_HEADLINE = (
    "final/student_acc_top1",
    "final/student_acc_top1_best_epoch",
    "final/teacher_acc_top1",
    "final/agreement_top1",
    "final/speedup_latency_b1",
)


def hparams_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The final numbers, flat, for the TensorBoard HParams tab (same values as results.json)."""
    flat: dict[str, float] = {}
    for role in ("teacher", "student"):
        for key, value in results.get(role, {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"final/{role}_{key}"] = float(value)
    for key, value in results.get("comparison", {}).items():
        if isinstance(value, (int, float)):
            flat[f"final/{key}"] = float(value)
    headline = {k: flat.pop(k) for k in _HEADLINE if k in flat}
    return {**headline, **flat}


# --- the table ---------------------------------------------------------------------------------
def format_value(value: Any, kind: str) -> str:
    """One number as the tables show it: pct, int, macs, ms, x, g (grouped integer) or f."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "macs":
        return f"{value / 1e6:,.2f} M"
    if kind == "ms":
        return f"{value:.3g}"
    if kind == "x":
        return f"{value:.2f}×"
    return f"{value:,.0f}" if kind == "g" else f"{value:,.2f}"


ROWS = [  # (label, key, format, comparison key)
    ("top-1 accuracy", "acc_top1", "pct", "acc_gap_top1"),
    ("top-5 accuracy", "acc_top5", "pct", None),
    ("parameters", "params", "int", "compression_params"),
    ("size (MB)", "size_mb", "f", "compression_size"),
    ("MACs / image", "macs", "macs", "macs_ratio"),
    ("latency b=1 (ms, median)", "latency_ms_b1", "ms", "speedup_latency_b1"),
    ("latency b=1 IQR (ms)", "latency_iqr_ms_b1", "ms", None),
    ("throughput (img/s)", "throughput_ips", "g", "speedup_throughput"),
]


def result_columns(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(header, stats) for every model the run reports, in a sensible order."""
    run = results["run"]
    field = run.get("members_field")  # a method's several students (its declaration)
    if field and isinstance(results.get(field), list):  # a chain: member 0 is the teacher
        key, label = run.get("member_key", "step"), run.get("member_label", "step")
        return [(f"{label} {m[key]}" + (" (teacher)" if m[key] == 0 else ""), m) for m in results[field]]
    if field and field in run:  # side by side: every member, best marked
        columns = [("teacher", results["teacher"])] if results.get("teacher") else []
        for role in run[field]:
            mark = " (best)" if role == run.get("best_student") else ""
            columns.append((f"{role}{mark}", results[role]))
        return columns
    columns = [(f"teacher ({run.get('teacher')})", results["teacher"])] if results.get("teacher") else []
    return columns + [(f"student ({run.get('student')})", results.get("student", {}))]


def results_table(results: dict[str, Any]) -> Table:
    """Teacher vs student (and every member of a chain or of several students), with the ratios."""
    run, cmp = results["run"], results.get("comparison", {})
    columns = result_columns(results)
    pair = len(columns) == 2 and bool(results.get("teacher"))
    title = f"{run.get('method')}: {run.get('teacher') or '—'} → {run.get('student')} on {run.get('data')}"
    table = Table(title=title, title_style="bold")
    table.add_column("")
    for header, _ in columns:
        table.add_column(header, justify="right")
    if pair:
        table.add_column("teacher / student", justify="right")
    for label, key, kind, cmp_key in ROWS:
        if not any(key in stats for _, stats in columns):
            continue
        cells = [format_value(stats.get(key), kind) for _, stats in columns]
        if pair:
            ratio = cmp.get(cmp_key) if cmp_key else None
            if ratio is None:
                cells.append("")
            else:
                cells.append(f"{100 * ratio:+.2f} pts" if cmp_key == "acc_gap_top1" else format_value(ratio, "x"))
        table.add_row(label, *cells)
    if "agreement_top1" in cmp:
        table.add_row("top-1 agreement", *[""] * (len(columns) - 1), format_value(cmp["agreement_top1"], "pct"), "")
    if "ensemble" in results:
        table.add_row("ensemble top-1", *[""] * (len(columns) - 1), format_value(results["ensemble"]["acc_top1"], "pct"))
    measured = next((stats for _, stats in columns if "macs" in stats), None)
    if measured:
        table.caption = (
            f"MACs: torch.utils.flop_counter (conv/linear/matmul), batch 1. Timing: "
            f"torch.utils.benchmark on {measured.get('device')}, {measured.get('threads')} threads; "
            f"throughput at batch {measured.get('throughput_batch')}. MB = 10^6 bytes of state_dict."
        )
    return table


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    (console or Console()).print(results_table(results))
