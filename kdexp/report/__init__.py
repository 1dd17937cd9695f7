"""``kdexp-report DIR...``: gather finished runs → one table (mean ± std over seeds), CSV, plots.

Runs are grouped by their whole composed configuration but the seed and output paths (data,
teacher, student, method, the method's options and every other setting), so
``kdexp -m method=vanilla,kd seed=0,1,2`` reads as one row per method, and two sweeps at batch
sizes 64 and 128 as two rows each, with ``data.batch_size`` among their options. Failed and
interrupted runs are counted and listed. One architecture has one latency on one device (the
timing store's at report time); what every row shares (epochs, limits, overrides, the teacher's
provenance) is said in the caption, the plot titles and ``report_settings.yaml``.
Writes ``report.md``, ``report.csv``, ``report_settings.yaml``, ``acc_vs_latency.png``,
``acc_vs_size.png``, ``acc_vs_train_time.png``, ``learning_curves.png`` (validation accuracy per
epoch, mean ± std over seeds, also as TensorBoard scalars under ``learning_curves/``) and the
TensorBoard HParams experiment summary next to the runs (the first folder given, or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from kdexp.console import ascii_safe_streams
from kdexp.metric_names import metric_name
from kdexp.results import RESULTS_FILE, comparison, format_value
from kdexp.tools.files import write_atomic


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
    "train_time_s": ("run", "phases_s", "training"),  # the student's training (kdexp.phases)
    "run_time_s": ("run", "duration_s"),  # the whole run: teacher training, tests, profiling too
    # profile.runtimes=[torch,onnxruntime] (kdexp.runtimes): the exported student in ONNX Runtime
    "student_latency_ms_onnxruntime": ("student", "latency_ms_b1_onnxruntime"),
    "speedup_onnxruntime": ("comparison", "speedup_latency_b1_onnxruntime"),
    # students that declare their stored form (kdexp.runner.assemble.stored_sizes)
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
            results["_trial"] = optuna_trial(file.parent)
            runs.append(results)
    mark_varying(runs)
    unify_timings(runs)
    return runs


TRIAL_FILE = "optuna_trial.json"  # written by kdexp.tuning.pruning in an Optuna trial's run folder


def optuna_trial(run_dir: Path) -> dict[str, Any]:
    """The Optuna trial a run was (its study, number, and whether it was pruned), or {}."""
    try:
        return json.loads((run_dir / TRIAL_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def pruned_note(results: dict[str, Any]) -> str | None:
    """``<run dir>: Optuna trial 3 pruned after epoch 2`` for a pruned trial's run, else None."""
    trial = results.get("_trial") or {}
    if trial.get("state") != "pruned":
        return None
    return f"{results['_dir']}: Optuna trial {trial.get('trial')} pruned after epoch {int(trial.get('pruned_epoch', 0)) + 1}"


# --- one timing per architecture ---------------------------------------------------------------
TIMING_FIELDS = ("latency_ms_b1", "latency_iqr_ms_b1", "throughput_ips")
CONDITION_FIELDS = ("threads", "throughput_batch")  # what else a chosen timing brings along


def _timing_identity(results: dict[str, Any], role: str) -> tuple[Any, ...]:
    """Under which conditions a timing was taken: its key in the timing store
    (kdexp.profile.timing_key: architecture, input shape, device, threads, torch version), or, for
    runs that did not record one, the architecture as results.json describes it and the timing
    conditions."""
    stats = results[role]
    if stats.get("timing_key"):
        return ("key", stats["timing_key"])
    return ("run", *_architecture(results, role), *(stats.get(f) for f in CONDITION_FIELDS))


def _architecture(results: dict[str, Any], role: str) -> tuple[Any, ...]:
    """One model on one device: its name, parameters, MACs and the device it was timed on."""
    stats = results[role]
    return results["run"].get(role), stats.get("params"), stats.get("macs"), stats.get("device")


def _read_store(path: str) -> dict[str, Any]:
    """A timing store's entries (kdexp.profile.TimingStore's JSON file; read here without torch)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _steadiness(stats: dict[str, Any]) -> float:
    """IQR / median of a timing (lower is steadier; 1 when the IQR is unknown)."""
    iqr = stats.get("latency_iqr_ms_b1")
    return float(iqr) / float(stats["latency_ms_b1"]) if iqr is not None else 1.0


def unify_timings(runs: list[dict[str, Any]]) -> None:
    """Give every run of one architecture on one device the same timing, then recompute each
    run's speed-ups. Per timing condition: the timing store's entry as it is now (a later job
    may have replaced a noisy one), else the steadiest copy among the runs (what the store keeps);
    per architecture and device, the steadiest of its conditions (runs that got different thread
    counts on a busy machine). Each profile says ``timing_source``: ``store`` or ``runs``."""
    stores: dict[str, dict[str, Any]] = {}
    copies: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    architectures: dict[tuple[Any, ...], set[tuple[Any, ...]]] = defaultdict(set)
    for results in runs:
        for role in ("student", "teacher"):
            stats = results.get(role)
            if isinstance(stats, dict) and _get(results, (role, "latency_ms_b1")):
                identity = _timing_identity(results, role)
                copies[identity].append(stats)
                architectures[_architecture(results, role)].add(identity)
    current: dict[tuple[Any, ...], dict[str, Any]] = {}
    for identity, members in copies.items():
        steadiest = min(members, key=_steadiness)
        conditions = {f: steadiest[f] for f in CONDITION_FIELDS if f in steadiest}
        current[identity] = {**conditions, **{f: steadiest[f] for f in TIMING_FIELDS if f in steadiest}, "timing_source": "runs"}
        paths = sorted({m["timing_store"] for m in members if m.get("timing_store")}) if identity[0] == "key" else []
        for path in paths:
            if path not in stores:
                stores[path] = _read_store(path)
            entry = stores[path].get(identity[1])
            if isinstance(entry, dict) and all(isinstance(entry.get(f), (int, float)) for f in TIMING_FIELDS):
                current[identity] = {**conditions, **{f: float(entry[f]) for f in TIMING_FIELDS}, "timing_source": "store"}
                break
    for identities in architectures.values():
        chosen = min((current[i] for i in sorted(identities, key=str)), key=_steadiness)
        for stats in (s for i in identities for s in copies[i]):
            stats.update(chosen)
            if "latency_iqr_ms_b1" in stats:
                stats["latency_noisy"] = noisy(stats["latency_ms_b1"], stats["latency_iqr_ms_b1"])
    for results in runs:
        teacher, student, cmp = results.get("teacher"), results.get("student"), results.get("comparison")
        if not (isinstance(teacher, dict) and isinstance(student, dict) and isinstance(cmp, dict)):
            continue
        speedups = comparison(teacher, student)  # the run's own formula, on the unified timings
        cmp.update({k: speedups[k] for k in ("speedup_latency_b1", "speedup_throughput") if speedups[k] is not None})


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


def teacher_identity(results: dict[str, Any]) -> str | None:
    """Which teacher a run had: its cache key (or checkpoint path, or name); None without one."""
    run = results.get("run", {})
    if not run.get("teacher") or run.get("method") == "vanilla":
        return None
    source = run.get("teacher_source") or {}
    return str(source.get("key") or source.get("path") or run["teacher"])


def teacher_training_times(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each teacher's one-off training time (s): the ``teacher`` phase of the run that trained it
    (later runs take it from the cache). Teachers trained before these runs are not listed."""
    times: dict[str, float] = {}
    for results in runs:
        seconds = _get(results, ("run", "phases_s", "teacher"))
        if (results["run"].get("teacher_source") or {}).get("source") == "trained" and seconds is not None:
            times.setdefault(teacher_identity(results), seconds)
    return times


def _get(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    primary = (results.get("run") or {}).get("primary_metric")  # a task's own headline metric (kdexp.tasks)
    if primary and path[-1].startswith("acc_top1"):
        path = (*path[:-1], primary + path[-1].removeprefix("acc_top1"))
    value: Any = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group: seeds, failures, mean/std of accuracies, means of the rest.

    Accuracies are fractions. ``delta_vs_vanilla`` is the last-epoch mean minus that of the
    vanilla row with the same data, student and non-method overrides, where one exists.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for results in runs:
        groups[group_key(results)].append(results)
    teacher_times = teacher_training_times(runs)
    rows = []
    for key, members in sorted(groups.items()):
        done = [m for m in members if not failed(m)]
        row: dict[str, Any] = dict(zip(KEY_FIELDS, key))
        row["metric"] = (members[0]["run"].get("primary_metric") or "acc_top1") if members else "acc_top1"
        row["n"] = len(done)
        row["seeds"] = sorted(m["run"].get("seed") for m in done)
        row["failed"] = len(members) - len(done)
        row["errors"] = [f"{m['_dir']}: {m['run'].get('error', '')}" for m in members if failed(m)]
        row["pruned"] = [note for m in done if (note := pruned_note(m))]  # stopped early by the study's pruner
        for name, path in MEAN_STD.items():
            values = [v for m in done if (v := _get(m, path)) is not None]
            row[f"{name}_mean"] = statistics.fmean(values) if values else None
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else None  # one seed: no spread
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
        sources = [(m["run"].get("teacher_source") or {}).get("source") for m in done]
        sources = [s for s in sources if s in ("cache", "trained")]
        row["teacher_cache_hits"] = f"{sources.count('cache')}/{len(sources)}" if sources else None
        once = [teacher_times[t] for t in {teacher_identity(m) for m in done} if t in teacher_times]
        row["teacher_train_time_s"] = statistics.median(once) if once else None  # once, not in train_time_s
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


# --- what every row shares ----------------------------------------------------------------------
# How long the models trained: shown whenever the rows share it and it is not the default
# (key under trainer. or teacher.train. → the values that mean "no limit").
_BUDGET = {
    "max_epochs": (), "max_steps": ("-1",), "max_time": ("None",), "limit_train_batches": ("None", "1.0"),
    "limit_val_batches": ("None", "1.0"), "limit_test_batches": ("None", "1.0"), "overfit_batches": ("0", "0.0"),
    "fast_dev_run": ("False", "0"),
}
# Command-line keys that are not settings of the numbers (or are columns of the rows).
_NOT_SHARED_SETTINGS = ("hydra.", "paths.", "logger", "callbacks.", "hparams_search", "ckpt_path", "auto_resume", "method.")


def shared_settings(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Every setting (``run_settings``) that has one value in all the finished runs; a teacher's
    among the runs with a teacher (a vanilla run has none)."""
    done = [r for r in runs if not failed(r)] or runs
    taught = [r for r in done if teacher_identity(r) is not None]
    shared = {}
    for key in sorted({k for r in done for k in r["_settings"]}):
        among = taught if key.startswith("teacher.") else done
        values = {r["_settings"].get(key) for r in among}
        if among and len(values) == 1 and None not in values:
            shared[key] = values.pop()
    return shared


def shared_overrides(runs: list[dict[str, Any]]) -> list[str]:
    """The command-line overrides every finished run was given alike (``trainer.max_epochs=2``),
    in command-line order; not the rows' own columns, output paths or loggers."""
    lines = [r.get("_command_line", {}) for r in runs if not failed(r)]
    if not lines:
        return []
    return [
        f"{key}={value}" for key, value in lines[0].items()
        if key not in _GROUP_CHOICES and key not in ("teacher", "student") and not key.startswith(_NOT_SHARED_SETTINGS)
        and all(line.get(key) == value for line in lines)
    ]


def teacher_notes(runs: list[dict[str, Any]]) -> list[str]:
    """Where each teacher came from (its provenance, as a run's table says it) and its one-off
    training time, which no row's training time includes."""
    sources: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for results in runs:
        if not failed(results) and teacher_identity(results) is not None:
            sources[teacher_identity(results)].append(results["run"])
    times = teacher_training_times(runs)
    notes = []
    for identity, members in sources.items():
        infos = [m.get("teacher_source") or {} for m in members]
        info = next((i for i in infos if i.get("source") == "cache"), infos[0])  # "cache …, trained N epochs"
        if not (info.get("summary") or info.get("source")):
            continue  # a run that did not record its teacher's provenance
        note = f"Teacher {members[0].get('teacher')}: {info.get('summary') or info.get('source')}"
        if identity in times:
            note += f"; trained once, in {times[identity]:.3g} s (not in any row's train s)"
        notes.append(note + ".")
    return notes


def common_notes(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """What every row shares, for the caption, the CSV's sidecar and the plot titles: how long
    students and teachers trained (epochs, limits), the shared command-line overrides and
    options, and each teacher's provenance."""
    shared = shared_settings(runs)
    taught = any(r["teacher"] != "—" for r in rows)
    budget = [
        f"{prefix}{key}={shared[prefix + key]}" for prefix in ("trainer.", "teacher.train.") if prefix == "trainer." or taught
        for key, defaults in _BUDGET.items() if prefix + key in shared and shared[prefix + key] not in defaults
    ]
    said = {item.split("=", 1)[0] for item in budget}
    overrides = [o for o in shared_overrides(runs) if o.split("=", 1)[0].lstrip("+~") not in said]
    settings = budget + overrides + [o for o in shared_options(rows) if o not in overrides]
    return (["All rows: " + " ".join(settings) + "."] if settings else []) + teacher_notes(runs)


SETTINGS_FILE = "report_settings.yaml"  # report.csv's sidecar: what every row shares


def write_settings(runs: list[dict[str, Any]], notes: list[str], path: Path) -> None:
    """``report_settings.yaml``: the notes of the caption and every setting the rows share."""
    import yaml

    record = {"notes": notes, "shared_settings": shared_settings(runs),
              "shared_overrides": shared_overrides(runs), "data": sorted({str(r["run"].get("data")) for r in runs})}
    write_atomic(path, yaml.safe_dump(record, sort_keys=False, allow_unicode=True, width=120))


# --- formatting --------------------------------------------------------------------------------
def _pct(mean: float | None, std: float | None = None, spread: bool = False) -> str:
    """A percentage; with ``spread``, ``± std`` (``± —`` where one seed gives no std)."""
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else " ± —" if spread else "")


def _num(value: float | None, kind: str) -> str:
    """Report cells: a signed difference in points, a one-decimal ratio, else as run tables do."""
    if value is None:
        return "—"
    if kind == "pts":
        return f"{100 * value:+.2f}"
    if kind == "x":
        return f"{value:.1f}×"
    if kind == "s":  # seconds: 3 significant digits below 100 s (a short run), whole seconds above
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return format_value(value, kind)


HEADERS = [
    "teacher → student", "method", "options", "seeds", "student acc best epoch (%)",
    "student acc last epoch (%)", "Δ vs vanilla (pts)", "teacher acc (%)", "student params",
    "student MACs", "student latency b=1 (ms)", "speed-up", "student train time (s)", "teacher cache hits",
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
    seeds += f" ({len(row['pruned'])} pruned)" if row.get("pruned") else ""
    options = " ".join(o for o in row["options"].split() if o not in shared)
    return [
        models,
        row["method"],
        options or "—",
        seeds,
        _pct(row["student_acc_best_mean"], row["student_acc_best_std"], spread=True),
        _pct(row["student_acc_last_mean"], row["student_acc_last_std"], spread=True),
        _num(row["delta_vs_vanilla"], "pts"),
        _pct(row["teacher_acc"]) if row["teacher"] != "—" else "—",
        _num(row["student_params"], "int"),
        _num(row["student_macs"], "macs"),
        _num(row["student_latency_ms"], "ms") + (" ⚠" if row["latency_noisy"] else ""),
        _num(row["speedup"], "x") + (" ⚠" if row["latency_noisy"] and row["speedup"] is not None else ""),
        _num(row["train_time_s"], "s"),
        row["teacher_cache_hits"] or "—",
    ]


def _title(rows: list[dict[str, Any]]) -> str:
    datasets = sorted({row["data"] for row in rows})
    metrics = sorted({row.get("metric", "acc_top1") for row in rows} - {"acc_top1"})
    what = ", ".join(["accuracy"] * (len(metrics) < len({row.get("metric", "acc_top1") for row in rows})) + metrics)
    return "kdexp runs on " + ", ".join(datasets) + f" ({what}: mean ± std over seeds)"


def _caption(notes: list[str]) -> str:
    return "".join(f"{n} " for n in notes) + (
        "best ep.: test accuracy at the epoch of best validation accuracy; ± —: one seed, no spread; "
        "Δ: last epoch vs the vanilla student; latency: one per architecture and device, the timing "
        "store's at report time; speed-up: teacher latency / student latency at batch 1 (⚠: a timing "
        "whose IQR exceeds 25% of its median, too noisy to trust); train s: mean wall time of the "
        "student's training (fit) per run, without teacher training, tests and profiling; cache: runs "
        "whose teacher came from the cache / runs with a teacher."
    )


def _notes(rows: list[dict[str, Any]], notes: list[str] | None) -> list[str]:
    """The caption's notes: ``notes`` (common_notes of the runs), else the options all rows share."""
    if notes is not None:
        return notes
    shared = shared_options(rows)
    return ["All rows: " + " ".join(shared) + "."] if shared else []


def metric_headers(rows: list[dict[str, Any]], headers: list[str]) -> list[str]:
    """The headers, with "acc" named as the rows' headline metric when it is not accuracy (a
    task's primary metric, e.g. hr_at_10)."""
    metrics = {row.get("metric", "acc_top1") for row in rows}
    if len(metrics) != 1 or metrics == {"acc_top1"}:
        return headers
    name = metrics.pop()
    return [h.replace("acc", name).replace(" %", f" {name} %") if h.endswith("%") or "acc" in h else h for h in headers]


def rows_table(rows: list[dict[str, Any]], notes: list[str] | None = None) -> Table:
    shared = shared_options(rows)
    table = Table(title=_title(rows), caption=_caption(_notes(rows, notes)))
    for header in metric_headers(rows, SHORT_HEADERS) + [short for _, _, short, _ in optional_columns(rows)]:
        numeric = header not in SHORT_HEADERS[:3]  # the first three are text columns
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric, min_width=None if numeric else 8)
    for row in rows:
        table.add_row(*row_cells(row, shared), *optional_cells(rows, row), style="red" if row["failed"] and not row["n"] else None)
    return table


def rows_markdown(rows: list[dict[str, Any]], notes: list[str] | None = None) -> str:
    shared = shared_options(rows)
    headers = metric_headers(rows, HEADERS) + [header for _, header, _, _ in optional_columns(rows)]
    lines = [f"**{_title(rows)}**", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row_cells(row, shared) + optional_cells(rows, row)) + " |" for row in rows]
    lines += ["", _caption(_notes(rows, notes))]
    errors = [e for row in rows for e in row["errors"]]
    if errors:
        lines += ["", "Failed runs:", ""] + [f"- {e}" for e in errors]
    pruned = [p for row in rows for p in row.get("pruned", [])]
    if pruned:
        lines += ["", "Pruned trials (training stopped early by the Optuna study's pruner):", ""] + [f"- {p}" for p in pruned]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One line per row; what every row shares is in the sidecar ``report_settings.yaml``."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({**row, "seeds": " ".join(map(str, row["seeds"])), "errors": " | ".join(row["errors"]),
                      "pruned": " | ".join(row.get("pruned", []))} for row in rows)
    write_atomic(path, text.getvalue())


def figure_title(rows: list[dict[str, Any]], notes: list[str] | None, last: str = "", width: int = 105) -> str:
    """A plot's title: the report's title, what every row shares and ``last``, each wrapped at
    ``width`` characters (about 15 a figure inch at font size 8, so a line never leaves the figure)."""
    import textwrap

    return "\n".join(line for text in [_title(rows), *(notes or []), last] if text for line in textwrap.wrap(text, width))


def write_plots(rows: list[dict[str, Any]], folder: Path, notes: list[str] | None = None) -> list[Path]:
    """Student accuracy vs latency, vs parameters and vs the student's training time; teachers as
    stars, vanilla rows as squares; every point says its number of seeds; the title says what
    every row shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    written = []
    for x_key, t_key, x_label, name in (
        ("student_latency_ms", "teacher_latency_ms", "latency at batch 1 (ms, log scale)", "acc_vs_latency.png"),
        ("student_params", "teacher_params", "parameters (log scale)", "acc_vs_size.png"),
        ("train_time_s", None, "student training wall time per run (s, log scale)", "acc_vs_train_time.png"),
    ):
        points = [r for r in rows if r[x_key] is not None and r["student_acc_last_mean"] is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5 + 0.15 * len(notes or [])))
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
        ax.margins(x=0.12)  # room for the labels beside the outermost points
        # Plain numbers at 1-2-5 steps; unlabelled minor ticks (labelled ones overlap on a short range).
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(x_label)
        ax.set_ylabel("student top-1 accuracy, last epoch (%)")
        seeds = sorted({r["n"] for r in points})
        ax.set_title(figure_title(rows, notes, f"n = {'/'.join(map(str, seeds))} seed(s) per point; error bars: std"), fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(folder / name)
    return written


# --- learning curves ---------------------------------------------------------------------------
CURVES_PNG = "learning_curves.png"
CURVES_DIR = "learning_curves"  # TensorBoard runs of the aggregated curves, one per row
CURVES_SUFFIX = ".kdexp-curves"  # their event files: replaced on every report


def run_curve(run_dir: Path) -> dict[int, float]:
    """A run's validation accuracy per epoch (1-based) from its logs: the CSV logger's
    ``csv/metrics.csv``, else the TensorBoard event files in ``tensorboard/`` (``val/acc`` at the
    steps where Lightning logged the ``epoch``). Empty when the run kept neither (logger=none)."""
    name = metric_name("val")
    table = run_dir / "csv" / "metrics.csv"
    curve: dict[int, float] = {}
    if table.is_file():
        with table.open(newline="") as f:
            for line in csv.DictReader(f):
                if line.get(name) and line.get("epoch"):
                    curve[int(float(line["epoch"])) + 1] = float(line[name])  # a resumed epoch: the last
    events = run_dir / "tensorboard"
    if not curve and any(events.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its directory watcher logs every file at INFO
        log = EventAccumulator(str(events), size_guidance={"scalars": 0})  # every point
        log.Reload()
        if {name, "epoch"} <= set(log.Tags().get("scalars", [])):
            epochs = {e.step: int(e.value) for e in log.Scalars("epoch")}
            curve = {epochs[e.step] + 1: e.value for e in log.Scalars(name) if e.step in epochs}
    return curve


Curve = list[tuple[int, float, float | None, int]]  # (epoch, mean, std or None, seeds)


def learning_curves(runs: list[dict[str, Any]]) -> dict[tuple[str, ...], Curve]:
    """Per row (its ``group_key``): validation accuracy per epoch, mean and std over the row's
    finished runs that logged the epoch (std None for one run)."""
    per_row: dict[tuple[str, ...], list[dict[int, float]]] = defaultdict(list)
    for results in runs:
        curve = {} if failed(results) else run_curve(Path(results["_dir"]))
        if curve:
            per_row[group_key(results)].append(curve)
    out = {}
    for key, curves in per_row.items():
        points = []
        for epoch in sorted({e for c in curves for e in c}):
            values = [c[epoch] for c in curves if epoch in c]
            points.append((epoch, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)))
        out[key] = points
    return out


def _row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row[f] for f in KEY_FIELDS)


def curve_panels(rows: list[dict[str, Any]], curves: dict[tuple[str, ...], Curve]) -> dict[str, list[dict[str, Any]]]:
    """The rows with curves, one panel per setting (data, student and the settings that vary):
    panel title → rows; a vanilla row joins every panel of its data, student and student-side
    settings (its baseline's rule)."""
    keyed: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    drawn = [r for r in rows if _row_key(r) in curves]
    for row in (r for r in drawn if r["method"] != "vanilla"):
        keyed.setdefault((row["data"], row["student"], row["setting"]), []).append(row)
    for row in (r for r in drawn if r["method"] == "vanilla"):
        same = [k for k in keyed if k[:2] == (row["data"], row["student"]) and _student_side(k[2]) == _student_side(row["setting"])]
        for key in same or [(row["data"], row["student"], row["setting"])]:
            keyed.setdefault(key, []).insert(0, row)
    return {f"{data}: {student}" + (f", {setting}" if setting else ""): members
            for (data, student, setting), members in keyed.items()}


def curve_label(row: dict[str, Any], panel: list[dict[str, Any]]) -> str:
    """A line's name in its panel: the method, the options its panel's rows do not share, and the
    teacher where the panel has several."""
    taught = [r for r in panel if r["method"] != "vanilla"] or panel  # vanilla: labelled as such
    common = set.intersection(*(set(r["options"].split()) for r in taught))
    options = [o for o in row["options"].split() if o not in common]
    teachers = {r["teacher"] for r in panel if r["teacher"] != "—"}
    teacher = f" ({row['teacher']})" if len(teachers) > 1 and row["teacher"] != "—" else ""
    return " ".join([row["method"], *options]) + teacher


def write_learning_curves(
    rows: list[dict[str, Any]], curves: dict[tuple[str, ...], Curve], folder: Path, notes: list[str] | None = None
) -> Path | None:
    """``learning_curves.png``: validation accuracy per epoch, a line per row (mean over seeds, a
    band of ± std), one panel per setting; the same curves as TensorBoard scalars (one run per
    row under ``learning_curves/``, step = epoch) with the figure as an image."""
    panels = curve_panels(rows, curves)
    if not panels:
        return None
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    width = int(15 * 5.5 * columns)  # title characters that fit the figure's width
    lines = len(figure_title(rows, notes, width=width).splitlines())
    fig, axes = plt.subplots(math.ceil(len(panels) / columns), columns, squeeze=False, layout="constrained",
                             figsize=(5.5 * columns, 3.8 * math.ceil(len(panels) / columns) + 0.2 * lines))
    for ax, (title, members) in zip(axes.flat, panels.items()):
        for row in members:
            epochs, means, stds, seeds = zip(*curves[_row_key(row)])
            vanilla = row["method"] == "vanilla"
            mean = [100 * m for m in means]
            line, = ax.plot(epochs, mean, "--" if vanilla else "-", marker="o", markersize=3,
                            color="tab:gray" if vanilla else None,
                            label=f"{'alone (vanilla)' if vanilla else curve_label(row, members)} (n={max(seeds)})")
            ax.fill_between(epochs, [m - 100 * (s or 0) for m, s in zip(mean, stds)],
                            [m + 100 * (s or 0) for m, s in zip(mean, stds)], color=line.get_color(), alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1 accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(figure_title(rows, notes, "validation accuracy per epoch: mean over seeds, band ± std", width), fontsize=8)
    path = folder / CURVES_PNG
    fig.savefig(path, dpi=110)
    plt.close(fig)
    write_curves_tensorboard(panels, curves, folder, path)
    return path


def write_curves_tensorboard(
    panels: dict[str, list[dict[str, Any]]], curves: dict[tuple[str, ...], Curve], folder: Path, png: Path
) -> None:
    """The aggregated curves for TensorBoard: ``learning_curves/<row>/`` holds the scalars
    ``learning_curve/<panel>/val_acc_mean`` (and ``_plus_std``, ``_minus_std``) per epoch, and
    ``learning_curves/`` the figure as an image. Earlier reports' files are replaced."""
    import re

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    root = folder / CURVES_DIR
    for old in root.rglob(f"events.out.tfevents.*{CURVES_SUFFIX}"):
        old.unlink()
    events: dict[str, list[Event]] = defaultdict(list)
    now = time.time()
    for title, members in panels.items():
        for row in members:
            label = "vanilla" if row["method"] == "vanilla" else curve_label(row, members)
            for epoch, mean, std, _ in curves[_row_key(row)]:
                values = {"val_acc_mean": mean}
                if std is not None:
                    values.update(val_acc_mean_plus_std=mean + std, val_acc_mean_minus_std=mean - std)
                summary = Summary(value=[Summary.Value(tag=f"learning_curve/{title}/{k}", simple_value=v) for k, v in values.items()])
                events[re.sub(r"[^\w.=,+-]+", "_", label)[:100]].append(Event(step=epoch, wall_time=now, summary=summary))
    data = png.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the PNG's IHDR
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
    events[""].append(Event(step=0, wall_time=now, summary=Summary(value=[Summary.Value(tag="learning_curves", image=image)])))
    for name, items in events.items():
        writer = EventFileWriter(str(root / name), filename_suffix=CURVES_SUFFIX)
        for event in items:
            writer.add_event(event)
        writer.close()


HPARAMS_SUFFIX = ".kdexp-hparams"  # the experiment summary's event file: replaced on every report


def hparams_experiment(runs: list[dict[str, Any]]) -> tuple[list[tuple[str, list[Any], bool]], list[str]]:
    """The HParams columns for ``runs``: (hyperparameter, its values, whether it differs) with the
    swept keys first, then the other keys that vary, then the rest in the runs' own order; and the
    metric tags, headline first.

    TensorBoard's parallel-coordinates view shows the first 5 differing hyperparameters and the
    first 5 metrics by default, and drops every run without a value in a shown column. So only
    keys every run has are marked as differing, and the metrics every run has come first: a vanilla
    baseline (no teacher, so no teacher accuracy, agreement or speed-up) is always drawn."""
    from kdexp.results import LOGGED_METRICS, clean_hparams, hparams_metrics

    params = [clean_hparams(results.get("run", {}).get("hparams", {})) for results in runs]
    values: dict[str, list[Any]] = {}
    for row in params:
        for key, value in row.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    everywhere = {k for k in values if all(k in row for row in params)}
    varying = [k for k, v in values.items() if len(v) > 1 and k in everywhere]
    lines = [results.get("_command_line", {}) for results in runs]
    swept = []  # what the command lines varied, in their order
    for key in (k for line in lines for k in line):
        if key in varying and key not in swept and len({line.get(key) for line in lines}) > 1:
            swept.append(key)
    ordered = swept + [k for k in varying if k not in swept] + [k for k in values if k not in varying]
    logged = [set(hparams_metrics(results)) for results in runs]
    common = [m for m in LOGGED_METRICS if all(m in have for have in logged)]
    return [(k, values[k], k in varying) for k in ordered], common + [m for m in LOGGED_METRICS if m not in common]


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
    for name, vals, differs in columns:
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
        info = api_pb2.HParamInfo(name=name, type=kind, differs=differs)
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
    notes = common_notes(runs, rows)
    out = out or (paths[0] if paths[0].is_dir() else paths[0].parent)
    out.mkdir(parents=True, exist_ok=True)
    curves = write_learning_curves(rows, learning_curves(runs), out, notes)
    markdown = rows_markdown(rows, notes)
    if curves is not None:
        markdown += f"\n![validation accuracy per epoch, mean ± std over seeds]({curves.name})\n"
    write_atomic(out / "report.md", markdown)
    write_csv(rows, out / "report.csv")
    write_settings(runs, notes, out / SETTINGS_FILE)
    plots = write_plots(rows, out, notes) + ([curves] if curves is not None else [])
    experiment = write_hparams_experiment(runs, out)
    if console is None:  # logs and pipes get the full width; a terminal wraps the text columns
        console = Console() if Console().is_terminal else Console(width=200)
    console.print(rows_table(rows, notes))
    from kdexp.report.incremental import write_incremental_report

    plots += write_incremental_report(runs, out, group_key, console)
    from kdexp.report.federated import write_federated_report

    plots += write_federated_report(runs, out, group_key, console)
    for error in (e for row in rows for e in row["errors"]):
        console.print(f"[red]failed:[/] {error}")
    console.print(f"Report: {out / 'report.md'}, {out / 'report.csv'}, {out / SETTINGS_FILE}" + "".join(f", {p}" for p in plots))
    if experiment is not None:
        console.print(f"Compare them in TensorBoard's HParams tab: tensorboard --logdir {out}")
    return rows


class _Arguments(argparse.ArgumentParser):
    """kdexp-report's command line: a wrong one is a configuration error (exit 2), printed like
    every kdexp command's errors (kdexp.errors)."""

    def error(self, message: str) -> NoReturn:
        from kdexp.errors import SetupError

        raise SetupError(f"{message}\n{self.format_usage().strip()}")


def _main(argv: list[str]) -> None:
    from kdexp.errors import KdexpError, SetupError

    parser = _Arguments(prog="kdexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or results.json files")
    parser.add_argument("--out", type=Path, help="where report.md/.csv and the plots go (default: the first folder)")
    args = parser.parse_args(argv)
    ascii_safe_streams()  # a non-UTF-8 terminal: ASCII, not a crash
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise SetupError(f"--out {args.out} is a file, not a folder; give a folder (it is created if missing)")
    if not write_report(args.paths, args.out):
        raise KdexpError(f"no {RESULTS_FILE} under {', '.join(map(str, args.paths))}")


def main(argv: list[str] | None = None) -> int:
    """Console script ``kdexp-report``: its exit status (kdexp.errors.run_command)."""
    from kdexp.errors import run_command

    return run_command("kdexp-report", _main, argv)


if __name__ == "__main__":  # python -m <this module>, as the console script
    from kdexp.errors import exit_status

    exit_status(main())
