"""``kdexp-compare``: a fair verdict on methods. For one data/teacher/student and a list of methods
(default: every single-run method that distils a given teacher, and ``vanilla``), each method gets
the same tuning budget (``--trials`` Optuna trials of ``--tune-epochs`` epochs, ``hparams_search=auto``:
its declared ranges plus the optimiser's learning rate and weight decay, chosen on the *validation*
split only), then its best point and its published defaults are each run with ``--seeds`` seeds
at the configured epochs and tested. One report (console table, ``compare.md``, ``compare.csv``):
per method the published-default result, the tuned result (mean ± std over seeds), Δ of the tuned
result vs the tuned student alone, the chosen values, and the tuning cost (trials by state, wall
and CPU hours). The test set is never used for choosing.

    kdexp-compare --methods kd,at,rkd --trials 6 --tune-epochs 2 --seeds 3 -- data=fashion_mnist
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

from kdexp.tools.files import write_atomic

STORAGE_FILE = "studies.db"
METRIC = "student.val_acc_top1"  # what tuning maximises: the validation split, never the test set


def default_methods() -> list[str]:
    """Every registered method that is one run distilling a given, frozen teacher (no chain, no
    cohort, no teacher trained alongside, no teacher route), and ``vanilla``, the student alone."""
    from kdexp.methods import METHODS, DistillationModule

    names = []
    for name in METHODS:
        cls = METHODS.get(name)
        single = cls.chain is None and cls.members_field is None and not cls.teacher_use.trained_with_student
        own_route = cls.route_epochs.__func__ is not DistillationModule.route_epochs.__func__
        if name == "vanilla" or (single and cls.teacher_use.needed and not own_route):
            names.append(name)
    return names


@dataclass
class MethodResult:
    method: str
    default: list[float] = field(default_factory=list)  # test accuracy per seed (last epoch)
    tuned: list[float] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    best_val: float | None = None
    trials: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    note: str = ""


Runner = Callable[[list[str]], tuple[int, float]]


def run_kdexp(args: list[str]) -> tuple[int, float]:
    """``kdexp <args>`` in a child process (each sweep its own Hydra): its exit status and the CPU
    seconds it and its children used (its own rusage: exact while other methods run beside it)."""
    child = subprocess.Popen([sys.executable, "-m", "kdexp.train", *args])
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
        child.terminate()
        child.wait()
        raise
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return child.returncode, usage.ru_utime + usage.ru_stime


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / STORAGE_FILE).resolve()}"


def finished_runs(folder: Path) -> dict[int, float]:
    """Seed → test accuracy (last epoch) of each finished run under ``folder``."""
    found = {}
    for file in sorted(folder.glob("*/results.json")):
        results = json.loads(file.read_text())
        run = results.get("run", {})
        if run.get("status", "complete") == "complete" and "seed" in run and "acc_top1" in results.get("student", {}):
            found[int(run["seed"])] = float(results["student"]["acc_top1"])
    return found


def run_seeds(run: Runner, overrides: list[str], seeds: int, folder: Path) -> list[float]:
    """The seeds 0..N-1 not yet finished under ``folder`` as one sweep; every finished seed's accuracy."""
    done = finished_runs(folder)
    missing = [s for s in range(seeds) if s not in done]
    if missing:
        run(["-m", *overrides, f"seed={','.join(str(s) for s in missing)}", f"hydra.sweep.dir={folder}"])
    return [acc for _, acc in sorted(finished_runs(folder).items())]


def tuning_cost(folder: Path, wall_s: float, cpu_s: float) -> tuple[float, float]:
    """This invocation's tuning cost added to what earlier ones spent on the same study (kept in
    ``<folder>/tuning_cost.json``): a resumed comparison reports the whole cost."""
    file = folder / "tuning_cost.json"
    folder.mkdir(parents=True, exist_ok=True)  # a study tuned elsewhere may have no sweep folder here
    spent = json.loads(file.read_text()) if file.is_file() else {"wall_s": 0.0, "cpu_s": 0.0}
    spent = {"wall_s": spent["wall_s"] + wall_s, "cpu_s": spent["cpu_s"] + cpu_s}
    write_atomic(file, json.dumps(spent))
    return spent["wall_s"], spent["cpu_s"]


def compare_method(method: str, args: argparse.Namespace, out: Path, run: Runner) -> MethodResult:
    """Tune ``method`` within the budget, then run its defaults and its best point with N seeds.
    Run again with the same ``--out``, it continues: the study's finished trials and every
    finished seed are kept, only what is missing runs."""
    import optuna

    from kdexp.tuning.study import remaining

    result = MethodResult(method)
    storage = storage_url(out)
    folder = out / "tune" / method
    tune = ["-m", "hparams_search=auto", f"method={method}", *args.overrides, f"trainer.max_epochs={args.tune_epochs}",
            f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={method}",
            f"hydra/sweeper/pruner={args.pruner}", f"optimized_metric={METRIC}", f"hydra.sweep.dir={folder}"]
    try:
        tuned_before = remaining(optuna.load_study(study_name=method, storage=storage), args.trials) <= 0
    except KeyError:  # no such study yet
        tuned_before = False
    wall_s = cpu_s = 0.0
    if not tuned_before:
        started = time.monotonic()
        _, cpu_s = run(tune)
        wall_s = time.monotonic() - started
    result.wall_s, result.cpu_s = tuning_cost(folder, wall_s, cpu_s)
    study = optuna.load_study(study_name=method, storage=storage)
    result.trials = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState
                     if s != optuna.trial.TrialState.WAITING and any(t.state == s for t in study.trials)}
    final = [f"method={method}", *args.overrides, *([f"trainer.max_epochs={args.epochs}"] if args.epochs else [])]
    result.default = run_seeds(run, final, args.seeds, out / "default" / method)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        result.note = "no tuning trial finished (see tune/<method>/report.md)"
        return result
    best = study.best_trial
    result.chosen, result.best_val = dict(best.params), best.value
    from kdexp.tuning.space import override

    result.tuned = run_seeds(run, [*final, *(override(k, v) for k, v in best.params.items())], args.seeds, out / "tuned" / method)
    return result


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    spread = f"{100 * statistics.stdev(values):.2f}" if len(values) > 1 else "—"
    return f"{100 * statistics.fmean(values):.2f} ± {spread}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def rows(results: list[MethodResult]) -> list[dict[str, str]]:
    """The report's rows: one per method, Δ vs the tuned student alone (vanilla)."""
    alone = next((r for r in results if r.method == "vanilla" and r.tuned), None)
    base = statistics.fmean(alone.tuned) if alone else None
    table = []
    for r in results:
        delta = f"{100 * (statistics.fmean(r.tuned) - base):+.2f}" if r.tuned and base is not None and r is not alone else "—"
        hours = r.wall_s / 3600
        table.append({
            "method": r.method, "default": _mean_std(r.default), "tuned": _mean_std(r.tuned), "delta_vs_tuned_vanilla": delta,
            "seeds": str(len(r.tuned)), "best_val": "—" if r.best_val is None else f"{100 * r.best_val:.2f}",
            "chosen": ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in r.chosen.items()) or "—",
            "trials": " ".join(f"{n} {s.lower()}" for s, n in r.trials.items()) or "—",
            "cost": f"{hours:.3f} wall h, {r.cpu_s / 3600:.3f} CPU h" + (f"; {r.note}" if r.note else ""),
        })
    return table


HEADERS = {"method": "method", "default": "default acc (%)", "tuned": "tuned acc (%)",
           "delta_vs_tuned_vanilla": "Δ vs tuned vanilla (pts)", "seeds": "seeds", "best_val": "best val (%)",
           "chosen": "chosen values", "trials": "tuning trials", "cost": "tuning cost"}


def caption(args: argparse.Namespace) -> str:
    return (
        f"Budget per method: {args.trials} Optuna trials × {args.tune_epochs} epochs (hparams_search=auto: the method's declared "
        f"ranges + optimizer.lr and weight_decay; {args.pruner} pruning), chosen on the validation accuracy only. Then the "
        f"published defaults and the best point, {args.seeds} seeds each, "
        f"{f'{args.epochs} epochs' if args.epochs else 'the configured epochs'}; test accuracy at the last epoch, mean ± std. "
        f"Overrides: {' '.join(args.overrides) or 'none'}. Cost: the tuning's wall hours (on one GPU: its GPU hours) and CPU hours"
        f"{f' ({args.jobs} methods at once: their wall hours overlap, CPU hours do not)' if args.jobs > 1 else ''}."
    )


def markdown(table: list[dict[str, str]], args: argparse.Namespace) -> str:
    lines = ["| " + " | ".join(HEADERS.values()) + " |", "|---|" + "---:|" * 5 + "---|---|---|"]
    lines += ["| " + " | ".join(row[k].replace("|", "\\|") for k in HEADERS) + " |" for row in table]
    return "\n".join(lines) + "\n\n" + caption(args) + "\n"


def write_report(results: list[MethodResult], args: argparse.Namespace, out: Path) -> list[dict[str, str]]:
    from rich.console import Console
    from rich.table import Table

    table = rows(results)
    write_atomic(out / "compare.md", markdown(table, args))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(HEADERS))
    writer.writeheader()
    writer.writerows(table)
    write_atomic(out / "compare.csv", text.getvalue())
    console = Console() if Console().is_terminal else Console(width=200)
    rich_table = Table(title="kdexp-compare: every method at the same tuning budget", caption=caption(args))
    for key, header in HEADERS.items():
        rich_table.add_column(header, justify="left" if key in ("method", "chosen", "trials", "cost") else "right")
    for row in table:
        rich_table.add_row(*(row[k] for k in HEADERS))
    console.print(rich_table)
    console.print(f"Report: {out / 'compare.md'}, {out / 'compare.csv'}; studies: optuna-dashboard {storage_url(out)}")
    return table


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        from kdexp.errors import SetupError

        raise SetupError(f"{message}\n{self.format_usage().strip()}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Arguments(prog="kdexp-compare", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", help="comma-separated methods (default: every method that fits, vanilla included)")
    parser.add_argument("--trials", type=int, default=6, help="Optuna trials per method (default 6)")
    parser.add_argument("--tune-epochs", type=int, default=2, help="epochs per tuning trial (default 2)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the default and the tuned runs (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs of the default and tuned runs (default: trainer.max_epochs)")
    parser.add_argument("--pruner", default="median", help="hydra/sweeper/pruner: median | hyperband | threshold | none")
    parser.add_argument("--jobs", type=int, default=1, help="methods compared at once (default 1; runtime.threads=auto divides the cores)")
    parser.add_argument("--out", type=Path, help="where the sweeps and the report go (default outputs/compare/<time>)")
    parser.add_argument("overrides", nargs="*", help="kdexp overrides shared by every run, e.g. data=cifar100 teacher=resnet56")
    args = parser.parse_args(argv)
    for name in ("trials", "tune_epochs", "seeds", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for item in args.overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in ("method", "seed", "optimized_metric", "hparams_search") or key.startswith("hydra.sweep"):
            parser.error(f"{item}: kdexp-compare sets {key} itself (the test set is never used for choosing)")
    return args


def _main(argv: list[str], run: Runner = run_kdexp) -> None:
    from kdexp.methods import METHODS

    args = parse(argv)
    methods = args.methods.split(",") if args.methods else default_methods()
    for name in methods:
        METHODS.get(name)  # an unknown method: the registry's error lists the choices
    if "vanilla" not in methods:
        methods = ["vanilla", *methods]  # Δ is against the tuned student alone
    out = args.out or Path("outputs") / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    import optuna

    optuna.storages.RDBStorage(storage_url(out))  # the schema, once: methods started together would race to create it
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each method's sweeps are child processes
        results = list(pool.map(lambda m: compare_method(m, args, out, run), methods))
    write_report(results, args, out)


def main(argv: list[str] | None = None) -> int:
    """Console script ``kdexp-compare``: its exit status (kdexp.errors.run_command)."""
    from kdexp.errors import run_command

    return run_command("kdexp-compare", _main, argv)


if __name__ == "__main__":
    from kdexp.errors import exit_status

    exit_status(main())
