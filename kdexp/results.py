"""A run's final numbers: teacher vs student, as results.json, a Rich table and a TensorBoard row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdexp.console import ascii_safe_streams
from kdexp.run_record import RESULTS_FILE
from kdexp.tools.files import write_atomic, write_json


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
        **({  # profile.runtimes=[...,onnxruntime] (kdexp.runtimes): the deployed speed-up
            "speedup_latency_b1_onnxruntime": _ratio(teacher.get("latency_ms_b1_onnxruntime"), student.get("latency_ms_b1_onnxruntime")),
            "speedup_throughput_onnxruntime": _ratio(student.get("throughput_ips_onnxruntime"), teacher.get("throughput_ips_onnxruntime")),
        } if "latency_ms_b1_onnxruntime" in student else {}),
    }


def write_results(results: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``results.json`` atomically (a crash mid-write leaves the previous version)."""
    return write_json(Path(output_dir) / RESULTS_FILE, results)


# The final numbers TensorBoard and the other loggers get (results.json has them all): those a
# distillation run is judged by first, since the HParams tab shows its first columns by default.
# Each is one point, so a short list keeps the Scalars tab for the curves.
LOGGED_METRICS = (
    "final/student_acc_top1",
    "final/teacher_acc_top1",
    "final/agreement_top1",
    "final/speedup_latency_b1",
    "final/student_acc_top1_best_epoch",
    "final/acc_gap_top1",
    "final/compression_params",
    "final/student_params",
    "final/student_macs",
    "final/student_latency_ms_b1",
)


def hparams_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The headline final numbers, flat, for the HParams tab (same values as results.json)."""
    flat: dict[str, float] = {}
    for role in ("teacher", "student"):
        for key, value in results.get(role, {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"final/{role}_{key}"] = float(value)
    for key, value in results.get("comparison", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"final/{key}"] = float(value)
    wanted = [*(results.get("run", {}).get("logged_metrics") or []), *LOGGED_METRICS]  # a task's own first
    return {k: flat[k] for k in dict.fromkeys(wanted) if k in flat}


def override_hparams(overrides: list[str]) -> dict[str, Any]:
    """Every command-line override as a hyperparameter: ``trainer.max_epochs=4`` → 4 (YAML scalars,
    so numbers sort as numbers; lists and mappings as text). Hydra's ``+``/``~`` prefixes dropped."""
    import yaml

    params: dict[str, Any] = {}
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        params[key.lstrip("+~")] = value if isinstance(value, (str, int, float, bool)) else text
    return params


def clean_hparams(params: dict[str, Any]) -> dict[str, str | float | bool]:
    """HParams values TensorBoard can hold: text, numbers and booleans (None becomes "None")."""
    return {k: v if isinstance(v, (str, bool, int, float)) else str(v) for k, v in params.items()}


def log_tensorboard_session(logger: Any, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """One HParams session for this run: its hyperparameters (session start) and final metrics
    (scalars, which the HParams tab reads). Without the experiment summary that Lightning's
    ``log_hyperparams`` also writes: TensorBoard takes its columns from one run's summary, so the
    columns come from the union of all sessions, or from the summary ``kdexp-report`` writes at
    a sweep's root."""
    from torch.utils.tensorboard.summary import hparams

    _, session_start, session_end = hparams(clean_hparams(params), metrics)
    # The writer Lightning closed after fit() opens its file again (as Lightning's own hparams call does).
    file_writer = logger.experiment._get_file_writer()
    file_writer.add_summary(session_start)
    file_writer.add_summary(session_end)
    logger.log_metrics(metrics, step=step)


def log_final(loggers: list[Any], params: dict[str, Any], metrics: dict[str, float], step: int) -> list[str]:
    """Send a run's hyperparameters and final numbers to every logger through Lightning's standard
    API: ``log_hyperparams(params)`` then ``log_metrics(metrics, step)``. TensorBoard gets an
    HParams session without a per-run experiment summary (see ``log_tensorboard_session``).

    A logger that fails is reported, never raised: results.json is written already. Returns the
    failures as "LoggerName: error".
    """
    from pytorch_lightning.loggers import TensorBoardLogger

    problems = []
    for logger in loggers:
        try:
            if isinstance(logger, TensorBoardLogger):
                log_tensorboard_session(logger, params, metrics, step)
            else:
                logger.log_hyperparams(params)
                logger.log_metrics(metrics, step=step)
            logger.finalize("success")
        except Exception as err:  # noqa: BLE001 - an optional service must not cost the run
            problems.append(f"{type(logger).__name__}: {type(err).__name__}: {err}")
    return problems


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
    ("deployed size (MB)", "deployed_size_mb", "f", None),  # a quantised student at its bit-width, a projection net's bits
    ("int8 model top-1", "int8_acc_top1", "pct", None),  # an 8-bit student converted to a real int8 model
    ("int8 model latency b=1 (ms)", "int8_latency_ms_b1", "ms", None),
    ("MACs / image", "macs", "macs", "macs_ratio"),
    ("latency b=1 (ms, median)", "latency_ms_b1", "ms", "speedup_latency_b1"),
    ("latency b=1 IQR (ms)", "latency_iqr_ms_b1", "ms", None),
    ("throughput (img/s)", "throughput_ips", "g", "speedup_throughput"),
    ("ONNX Runtime latency b=1 (ms)", "latency_ms_b1_onnxruntime", "ms", "speedup_latency_b1_onnxruntime"),
    ("ONNX Runtime throughput (img/s)", "throughput_ips_onnxruntime", "g", "speedup_throughput_onnxruntime"),
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
    rows = [tuple(r) for r in run.get("table_rows") or ()] or ROWS  # a task declares its own (kdexp.tasks)
    for label, key, kind, cmp_key in rows:
        if not any(key in stats for _, stats in columns):
            continue
        cells = [format_value(stats.get(key), kind) + (" (noisy)" if key == "latency_ms_b1" and stats.get("latency_noisy") else "")
                 for _, stats in columns]
        if pair:
            ratio = cmp.get(cmp_key) if cmp_key else None
            if ratio is None:
                cells.append("")
            else:
                cells.append(f"{100 * ratio:+.2f} pts" if kind == "pct" else format_value(ratio, "x"))
        table.add_row(label, *cells)
    if "agreement_top1" in cmp:
        table.add_row("top-1 agreement", *[""] * (len(columns) - 1), format_value(cmp["agreement_top1"], "pct"), "")
    if "ensemble" in results:
        table.add_row("ensemble top-1", *[""] * (len(columns) - 1), format_value(results["ensemble"]["acc_top1"], "pct"))
    measured = next((stats for _, stats in columns if "macs" in stats), None)
    notes = []
    source = run.get("teacher_source") or {}
    if source.get("summary"):
        notes.append(f"Teacher: {source['summary']}.")
    if measured:
        notes.append(
            f"MACs: torch.utils.flop_counter (conv/linear/matmul), batch 1. Timing: "
            f"torch.utils.benchmark on {measured.get('device')}, {measured.get('threads')} threads; "
            f"throughput at batch {measured.get('throughput_batch')}"
            + (", reused from the timing store (timed once per architecture)" if measured.get("timing") == "reused" else "")
            + ". MB = 10^6 bytes of state_dict."
            + (" (noisy): IQR > 25% of the median, do not trust small differences." if any(
                stats.get("latency_noisy") for _, stats in columns) else "")
        )
    if notes:
        table.caption = " ".join(notes)
    return table


RESULTS_MD = "results.md"


def table_markdown(table: Table) -> str:
    """A Rich table as a Markdown table, with its title above and caption below."""
    headers = [str(c.header) for c in table.columns]
    rows = zip(*[[str(cell) for cell in c.cells] for c in table.columns])
    lines = [f"**{table.title}**", ""] if table.title else []
    lines += ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if c.justify == "left" else "---:" for c in table.columns) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    if table.caption:
        lines += ["", str(table.caption)]
    return "\n".join(lines) + "\n"


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    """Print the run's table (full width when stdout is not a terminal: logs never wrap it), write
    it to the run folder as ``results.md``, and end with the folder and the TensorBoard command."""
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    table = results_table(results)
    if console is None:
        console = Console() if Console().is_terminal else Console(width=240, soft_wrap=True)
    console.print(table)
    folder = results.get("run", {}).get("output_dir")
    if not folder:
        return
    try:
        write_atomic(Path(folder) / RESULTS_MD, table_markdown(table))
    except OSError as err:  # results.json holds the numbers; the table is a convenience
        console.print(f"[yellow]could not write {Path(folder) / RESULTS_MD}: {err}[/]")
    console.print(f"Run folder: {folder}")
    if (Path(folder) / "tensorboard").is_dir():
        console.print(f"Curves: tensorboard --logdir {folder}")

