"""``kdexp-report DIR...``: gather finished runs → one table (mean ± std over seeds), CSV, plots.

Runs are grouped by their whole composed configuration but the seed and output paths (data,
teacher, student, method, the method's options and every other setting), so
``kdexp -m method=vanilla,kd seed=0,1,2`` reads as one row per method, and two sweeps at batch
sizes 64 and 128 as two rows each, with ``data.batch_size`` among their options. Failed and
interrupted runs are counted and listed.
Writes ``report.md``, ``report.csv``, ``acc_vs_latency.png``, ``acc_vs_size.png`` and
``acc_vs_train_time.png`` (and the TensorBoard HParams experiment summary) next to the
runs (the first folder given, or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdexp.console import ascii_safe_streams
from kdexp.results import RESULTS_FILE, format_value


def noisy(latency_ms: float, iqr_ms: float) -> bool:
    """IQR > 25% of the median (kdexp.profile.NOISY_IQR_RATIO; not imported: it imports torch)."""
    return iqr_ms > 0.25 * latency_ms

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
    "student_latency_iqr_ms": ("student", "latency_iqr_ms_b1"),
    "teacher_latency_iqr_ms": ("teacher", "latency_iqr_ms_b1"),
    "train_time_s": ("run", "duration_s"),
    # profile.runtimes=[torch,onnxruntime] (kdexp.runtimes): the exported student in ONNX Runtime
    "student_latency_ms_onnxruntime": ("student", "latency_ms_b1_onnxruntime"),
    "speedup_onnxruntime": ("comparison", "speedup_latency_b1_onnxruntime"),
    # students that declare their stored form (kdexp.run.assemble.stored_sizes)
    "student_size_mb": ("student", "size_mb"),
    "student_float32_mb": ("student", "size_mb_float32"),  # a quantised student's weights as float32
    "student_deployed_mb": ("student", "deployed_size_mb"),
    "student_int8_acc": ("student", "int8_acc_top1"),
    "student_int8_latency_ms": ("student", "int8_latency_ms_b1"),
}


# --- gathering ---------------------------------------------------------------------------------
def find_runs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every run's results.json under ``paths`` (files or folders), with its options attached.

    The runs of a chain (e.g. Born-Again's ``gen<k>/``) are parts of their chain's run, not runs of their own.
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
            if "chain_step" in run:  # one run of a chain, reported by the chain
                continue
            results["_dir"] = str(file.parent)
            method_options, overrides = run_options(file.parent)
            results["_method_options"] = method_options
            results["_settings"] = run_settings(file.parent, overrides, str(run.get("method")))
            results["_command_line"] = command_line(file.parent)
            runs.append(results)
    mark_varying(runs)
    return runs


# Config keys that never separate rows: the seed (averaged over), where files go, how runs are
# logged and checkpointed, how fast data loads; and the row's own columns (models, method).
_SAME_ROW_PREFIXES = ("seed", "paths.", "hydra.", "logger.", "callbacks.", "ckpt_path", "auto_resume", "profile.",
                      "method.", "trainer.default_root_dir")
_SAME_ROW_KEYS = {"data.name", "teacher.name", "student.name", "data.num_workers", "data.pin_memory", "data.root",
                  "data.download", "data.download_dir", "data.eval_batch_size"}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def command_line(run_dir: Path) -> dict[str, str]:
    """What the run's command line set (``.hydra/overrides.yaml``): key (no ``+``/``~``) → value."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    pairs = (str(item).partition("=") for item in OmegaConf.to_container(OmegaConf.load(path)))
    return {key.lstrip("+~"): value for key, _, value in pairs}


def run_settings(run_dir: Path, overrides: list[str], method: str) -> dict[str, str]:
    """Everything in the run's composed config (``.hydra/config.yaml``) that can change its
    numbers, flat (``data.batch_size`` → ``"64"``), plus command-line overrides of keys the saved
    config lacks. The seed, output paths, loggers and the row's own columns are left out."""
    from omegaconf import OmegaConf

    settings: dict[str, str] = {}
    config = run_dir / ".hydra" / "config.yaml"
    if config.is_file():
        flat = _flatten(OmegaConf.to_container(OmegaConf.load(config), resolve=False))
        settings = {k: str(v) for k, v in flat.items()}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        settings.setdefault(key, value)
    return {k: v for k, v in settings.items() if not k.startswith(_SAME_ROW_PREFIXES) and k not in _SAME_ROW_KEYS}


def mark_varying(runs: list[dict[str, Any]]) -> None:
    """Set each run's ``_setting`` to the settings that differ between the runs given (the rest
    are the same everywhere and said once), and ``_options`` to those plus its method options."""
    keys = sorted({k for r in runs for k in r["_settings"]})
    # A vanilla run has no teacher: its teacher.* settings neither vary nor separate its rows.
    taught = [r for r in runs if r.get("run", {}).get("method") != "vanilla"]
    varying = [
        k for k in keys
        if len({r["_settings"].get(k) for r in (taught if k.startswith("teacher.") else runs)}) > 1
    ]
    for results in runs:
        vanilla = results.get("run", {}).get("method") == "vanilla"
        setting = [
            f"{k}={results['_settings'][k]}" for k in varying
            if k in results["_settings"] and not (vanilla and k.startswith("teacher."))
        ]
        results["_setting"] = " ".join(setting)
        results["_options"] = " ".join(results["_method_options"] + setting)


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
            if key in _GROUP_CHOICES or key.startswith(("hydra.", "paths.")):
                continue
            overrides_list.append(item)
    return parts, overrides_list


def failed(results: dict[str, Any]) -> bool:
    """A run that did not finish: failed, or interrupted (SIGTERM, Ctrl-C)."""
    return results.get("run", {}).get("status") in ("failed", "interrupted")


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
            average = statistics.median if "latency" in name or name.startswith("speedup") else statistics.fmean
            row[name] = average(values) if values else None
        row["latency_noisy"] = any(
            m.get(role, {}).get("latency_noisy") for m in done for role in ("student", "teacher")
        ) or any(
            row[f"{role}_latency_ms"] is not None and row[f"{role}_latency_iqr_ms"] is not None
            and noisy(row[f"{role}_latency_ms"], row[f"{role}_latency_iqr_ms"]) for role in ("student", "teacher")
        )
        sources = [m["run"].get("teacher_source", {}).get("source") for m in done]
        sources = [s for s in sources if s in ("cache", "trained")]
        row["teacher_cache_hits"] = f"{sources.count('cache')}/{len(sources)}" if sources else None
        rows.append(row)
    for row in rows:
        base = _baseline(row, rows)
        ok = base is not None and row["student_acc_last_mean"] is not None
        row["delta_vs_vanilla"] = row["student_acc_last_mean"] - base if ok else None
    return rows


def _student_side(setting: str) -> str:
    """A setting without the teacher's keys: what a vanilla baseline must share with a row."""
    return " ".join(t for t in setting.split() if not t.startswith("teacher."))


def _baseline(row: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    if row["method"] == "vanilla":
        return None
    for other in rows:
        if (
            other["method"] == "vanilla"
            and (other["data"], other["student"]) == (row["data"], row["student"])
            and _student_side(other["setting"]) == _student_side(row["setting"])
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
    "student MACs", "student latency b=1 (ms)", "speed-up", "train time (s)", "teacher cache hits",
]
SHORT_HEADERS = [  # the console table: narrow enough for a terminal
    "teacher → student", "method", "options", "n", "best ep. %", "last ep. %", "Δ pts",
    "teacher %", "params", "MACs", "ms b=1", "speed-up", "train s", "cache",
]


# Columns shown only when some row has them: (column, header, short header, format).
OPTIONAL_COLUMNS = [
    ("student_latency_ms_onnxruntime", "student ONNX Runtime latency b=1 (ms)", "ORT ms b=1", "ms"),
    ("speedup_onnxruntime", "ONNX Runtime speed-up", "ORT speed-up", "x"),
    ("student_deployed_mb", "student size as deployed (MB; as float32 in brackets)", "deployed MB", "mb"),
    ("student_int8_acc", "int8 model top-1 (%)", "int8 %", "pct"),
    ("student_int8_latency_ms", "int8 model latency b=1 (ms)", "int8 ms", "ms"),
]


def optional_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The optional columns some row has a value for (e.g. ONNX Runtime timings, a quantised
    student's size at its bit-width, its int8 model's accuracy and latency)."""
    return [c for c in OPTIONAL_COLUMNS if any(r.get(c[0]) is not None for r in rows)]


def optional_cells(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """The optional columns' cells for ``row``."""
    cells = []
    for column, _, _, kind in optional_columns(rows):
        if kind == "pct":
            cells.append(_pct(row.get(column)))
        elif kind == "mb":
            value = row.get(column)
            full = row.get("student_float32_mb") if row.get("student_float32_mb") is not None else row.get("student_size_mb")
            cells.append("—" if value is None else f"{value:.4g}" + (f" ({full:.4g})" if full is not None else ""))
        else:
            cells.append(_num(row.get(column), kind))
    return cells


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
        _num(row["student_latency_ms"], "ms") + (" ⚠" if row["latency_noisy"] else ""),
        _num(row["speedup"], "x") + (" ⚠" if row["latency_noisy"] and row["speedup"] is not None else ""),
        _num(row["train_time_s"], "g"),
        row["teacher_cache_hits"] or "—",
    ]


def _title(rows: list[dict[str, Any]]) -> str:
    datasets = sorted({row["data"] for row in rows})
    return "kdexp runs on " + ", ".join(datasets) + " (accuracy: mean ± std over seeds)"


def _caption(shared: list[str]) -> str:
    return ("All rows: " + " ".join(shared) + ". " if shared else "") + (
        "best ep.: test accuracy at the epoch of best validation accuracy; Δ: last epoch vs the "
        "vanilla student; speed-up: teacher latency / student latency at batch 1 (⚠: a timing whose "
        "IQR exceeds 25% of its median, too noisy to trust); train s: mean wall time of a run; cache: "
        "runs whose teacher came from the cache / runs with a teacher."
    )


def rows_table(rows: list[dict[str, Any]]) -> Table:
    shared = shared_options(rows)
    table = Table(title=_title(rows), caption=_caption(shared))
    for header in SHORT_HEADERS + [short for _, _, short, _ in optional_columns(rows)]:
        numeric = header not in SHORT_HEADERS[:3]
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric, min_width=None if numeric else 8)
    for row in rows:
        table.add_row(*row_cells(row, shared), *optional_cells(rows, row), style="red" if row["failed"] and not row["n"] else None)
    return table


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    shared = shared_options(rows)
    headers = HEADERS + [header for _, header, _, _ in optional_columns(rows)]
    lines = [f"**{_title(rows)}**", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row_cells(row, shared) + optional_cells(rows, row)) + " |" for row in rows]
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
    """Student accuracy vs latency, vs parameters and vs training time; teachers as stars, vanilla
    rows as squares; every point says its number of seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for x_key, t_key, x_label, name in (
        ("student_latency_ms", "teacher_latency_ms", "latency at batch 1 (ms, log scale)", "acc_vs_latency.png"),
        ("student_params", "teacher_params", "parameters (log scale)", "acc_vs_size.png"),
        ("train_time_s", None, "training wall time per run (s, log scale)", "acc_vs_train_time.png"),
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
            label = ("alone (vanilla)" if vanilla else row["method"]) + f" (n={row['n']})"
            ax.annotate(label, (row[x_key], 100 * row["student_acc_last_mean"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        teachers: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            if t_key and r["teacher"] != "—" and r[t_key] is not None and r["teacher_acc"] is not None:
                teachers[r["teacher"]].append((r[t_key], r["teacher_acc"]))
        for teacher, points_t in sorted(teachers.items()):  # one star per teacher
            x = statistics.median(p[0] for p in points_t)
            acc = statistics.median(p[1] for p in points_t)
            ax.plot(x, 100 * acc, "*", color="tab:red", markersize=14)
            ax.annotate(f"teacher {teacher}", (x, 100 * acc), fontsize=8, xytext=(4, -10), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("student top-1 accuracy, last epoch (%)")
        seeds = sorted({r["n"] for r in points})
        ax.set_title(_title(rows) + f"\nn = {'/'.join(map(str, seeds))} seed(s) per point; error bars: std", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(folder / name)
    return written


HPARAMS_SUFFIX = ".kdexp-hparams"  # the experiment summary's event file: replaced on every report


def hparams_experiment(runs: list[dict[str, Any]]) -> tuple[list[tuple[str, list[Any]]], list[str]]:
    """The HParams columns for ``runs``: (hyperparameter, its values) with the keys that vary
    first, then the rest in the runs' own order; and the metric tags, headline first."""
    from kdexp.results import LOGGED_METRICS, clean_hparams

    values: dict[str, list[Any]] = {}
    for results in runs:
        for key, value in clean_hparams(results.get("run", {}).get("hparams", {})).items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    varying = [k for k, v in values.items() if len(v) > 1]
    lines = [results.get("_command_line", {}) for results in runs]
    swept = []  # what the command lines varied, in their order
    for key in (k for line in lines for k in line):
        if key in values and key not in swept and len({line.get(key) for line in lines}) > 1:
            swept.append(key)
    ordered = swept + [k for k in varying if k not in swept] + [k for k in values if k not in varying]
    return [(k, values[k]) for k in ordered], list(LOGGED_METRICS)


def write_hparams_experiment(runs: list[dict[str, Any]], folder: Path) -> Path | None:
    """One experiment-level HParams summary in ``folder`` (a sweep's root): TensorBoard then takes
    the tab's columns from it — every run's hyperparameters and the headline metrics — instead of
    from whichever run it reads first. Point ``tensorboard --logdir`` at ``folder``."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    columns, metrics = hparams_experiment([r for r in runs if not failed(r)])
    if not columns:
        return None
    infos = []
    for name, vals in columns:
        kinds = {type(v) for v in vals}
        if kinds == {bool}:
            kind, domain = api_pb2.DATA_TYPE_BOOL, [True, False]
        elif kinds <= {int, float}:
            kind, domain = api_pb2.DATA_TYPE_FLOAT64, sorted(float(v) for v in vals)
        elif kinds == {str}:
            kind, domain = api_pb2.DATA_TYPE_STRING, sorted(vals)
        else:  # mixed: no type or domain, TensorBoard shows the values as they are
            kind, domain = api_pb2.DATA_TYPE_UNSET, None
        # differs: TensorBoard lists (and shows by default) the hyperparameters that differ first.
        info = api_pb2.HParamInfo(name=name, type=kind, differs=len(vals) > 1)
        if domain is not None:
            info.domain_discrete.extend(domain)
        infos.append(info)
    experiment = api_pb2.Experiment(
        hparam_infos=infos, metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics]
    )
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    summary_metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    )
    summary = Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=summary_metadata)])
    for old in folder.glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"):
        old.unlink()
    writer = EventFileWriter(str(folder), filename_suffix=HPARAMS_SUFFIX)
    writer.add_event(Event(summary=summary, wall_time=time.time()))
    writer.close()
    return next(folder.glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"), None)


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
    experiment = write_hparams_experiment(runs, out)
    if console is None:  # logs and pipes get the full width; a terminal wraps the text columns
        console = Console() if Console().is_terminal else Console(width=200)
    console.print(rows_table(rows))
    from kdexp.incremental.report import write_incremental_report  # class-incremental runs, if any

    plots += write_incremental_report(runs, out, group_key, console)
    for error in (e for row in rows for e in row["errors"]):
        console.print(f"[red]failed:[/] {error}")
    console.print(f"Report: {out / 'report.md'}, {out / 'report.csv'}" + "".join(f", {p}" for p in plots))
    if experiment is not None:
        console.print(f"Compare them in TensorBoard's HParams tab: tensorboard --logdir {out}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or results.json files")
    parser.add_argument("--out", type=Path, help="where report.md/.csv and the plots go (default: the first folder)")
    args = parser.parse_args(argv)
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder; give a folder (it is created if missing)")
    if not write_report(args.paths, args.out):
        print(f"kdexp-report: no {RESULTS_FILE} under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
