"""Optuna searches (issue 27): kdexp's own sweeper on Optuna >= 4: the search space, a study's
budget shared by processes, failed / interrupted / pruned trials, and two `kdexp -m` processes on
one SQLite study."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from kdexp.tuning import study as st  # noqa: E402
from kdexp.tuning.space import auto_space, distributions, interval, method_space  # noqa: E402
from tests.conftest import REPO, VANILLA_RUN, compose_config  # noqa: E402


def test_sweep_overrides_become_optuna_distributions() -> None:
    space, fixed = distributions(["a=interval(1.0, 10.0)", "b=tag(log, interval(1e-3, 1.0))", "c=choice(x, y)",
                                  "d=range(1, 5)", "e=tag(int, interval(2, 8))", "f=3"])
    assert space["a"] == optuna.distributions.FloatDistribution(1.0, 10.0)
    assert space["b"] == optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    assert space["c"] == optuna.distributions.CategoricalDistribution(["x", "y"])
    assert space["d"] == optuna.distributions.IntDistribution(1, 4)
    assert space["e"] == optuna.distributions.IntDistribution(2, 8)
    assert fixed == ["f=3"]


def test_auto_searches_the_methods_declared_ranges_and_the_optimiser() -> None:
    from kdexp.methods import method_class

    cfg = compose_config("method=rkd")
    space = auto_space(cfg)
    assert space["method.distance_weight"] == interval(1.0, 100.0, log=True)  # rkd's own declaration
    lr, wd = cfg.optimizer.lr, cfg.optimizer.weight_decay
    assert space["optimizer.lr"] == interval(lr / 10, lr * 10, log=True)
    assert space["optimizer.weight_decay"] == interval(wd / 10, wd * 10, log=True)
    # The student alone has no teacher term to weigh: only the optimiser is searched.
    assert method_space(method_class("vanilla")) == {}


def _study(tmp_path: Path, n_trials: int = 3):
    spec = st.StudySpec(f"sqlite:///{tmp_path / 'study.db'}", "s", "maximize", n_trials, heartbeat_s=60)
    return spec, st.open_study(spec)


SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def test_the_budget_counts_finished_failed_and_running_trials_not_interrupted_ones(tmp_path: Path) -> None:
    spec, study = _study(tmp_path, n_trials=3)
    first, second = st.ask(study, spec, SPACE, at_most=2)
    assert st.tell(study, first, 0.5) == "COMPLETE"
    assert st.tell(study, second, float("nan")) == "FAIL"  # a failed run: recorded as failed, not as 0
    assert study.trials[1].user_attrs[st.OUTCOME] == st.FAILED and study.trials[1].value is None
    (third,) = st.ask(study, spec, SPACE, at_most=5)  # one left of three
    st.interrupt(study, [third])  # the sweep was stopped: queued again, not counted
    assert study.trials[2].state == TrialState.FAIL and study.trials[2].user_attrs[st.OUTCOME] == st.INTERRUPTED
    (retry,) = st.ask(study, spec, SPACE, at_most=5)
    assert retry.params == third.params and retry.number == 3  # the same values, once
    assert st.ask(study, spec, SPACE, at_most=5) == []  # three counted: complete, failed, running
    study.tell(retry, 0.7)
    assert st.remaining(study, spec.n_trials) == 0


def test_a_trial_whose_run_was_pruned_is_recorded_as_pruned(tmp_path: Path) -> None:
    spec, study = _study(tmp_path)
    (trial,) = st.ask(study, spec, SPACE, at_most=1)
    trial.report(0.1, step=0)
    trial.set_user_attr(st.PRUNED_AT, 0)  # what kdexp.tuning.pruning does in the run
    assert st.tell(study, trial, 0.1) == "PRUNED"
    assert study.trials[0].state == TrialState.PRUNED


def test_a_trial_left_running_by_a_dead_process_is_failed_and_queued_again(tmp_path: Path) -> None:
    spec, study = _study(tmp_path)
    spec = st.StudySpec(spec.storage, "s", "maximize", 3, heartbeat_s=1)
    study = st.open_study(spec)
    (trial,) = st.ask(study, spec, SPACE, at_most=1)
    study._storage.record_heartbeat(trial._trial_id)  # its process beat once, then died
    time.sleep(3.5)  # past the grace period (2 heartbeats; the database clock counts whole seconds)
    asked = st.ask(study, spec, SPACE, at_most=1)
    assert study.trials[0].state == TrialState.FAIL
    assert [t.params for t in asked] == [trial.params]  # the retry goes first


def _sweep_cmd(sweep_dir: Path, storage: str, n_trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdexp.train", "-m", *VANILLA_RUN, "trainer.max_epochs=2", "hydra/sweeper=optuna",
            "optimizer.lr=tag(log, interval(0.01, 0.5))", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared", f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.plots=false",
            f"hydra.sweep.dir={sweep_dir}", *extra]


def _sweep_env(tmp_path: Path) -> dict[str, str]:
    """A sweep subprocess's environment: its own teacher cache, tests/ importable (tuning_helpers)."""
    return {**os.environ, "KDEXP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}


def test_a_sweep_killed_mid_trial_resumes_with_its_finished_trials_kept(tmp_path: Path) -> None:
    """kill -9 a sweep while its second trial trains; the same command again notices the dead
    trial (its heartbeat went stale), runs it again with the same values, and finishes the study:
    three trials complete, the first one kept as it was (not run again)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = _sweep_env(tmp_path)
    held = tmp_path / "held"
    hold = ("+callbacks.hold._target_=tuning_helpers.HoldOnceAnyFinished", f"+callbacks.hold.finished={tmp_path}/sweep/*/results.json",
            f"+callbacks.hold.held={held}")
    first = subprocess.Popen(_sweep_cmd(tmp_path / "sweep", storage, 3, "hydra.sweeper.heartbeat_s=1", *hold), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not held.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held.exists(), f"the second trial never started (exit {first.poll()})"
    os.killpg(first.pid, signal.SIGKILL)  # mid-trial: no handler runs, the trial is left RUNNING
    first.wait()
    study = optuna.load_study(study_name="shared", storage=storage)
    done, killed = study.trials
    assert (done.state, killed.state) == (TrialState.COMPLETE, TrialState.RUNNING)

    again = subprocess.run(_sweep_cmd(tmp_path / "sweep", storage, 3, "hydra.sweeper.heartbeat_s=1"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and study.trials[1].state == TrialState.FAIL, states
    assert study.trials[0].value == done.value  # kept, not run again
    assert study.trials[2].params == killed.params  # the killed trial's values, run again first
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 3


def test_two_processes_share_one_study_and_a_pruned_trial_shows_in_the_report(tmp_path: Path) -> None:
    """Two `kdexp -m` processes on one SQLite study run its 4 trials between them, each once; the
    first prunes every trial at its first epoch (a threshold no accuracy reaches), the second
    prunes none: pruned trials are pruned in the study and in the report."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = _sweep_env(tmp_path)
    prune_all = ("hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=2.0")
    # a's first trial waits until b has started one: both processes run trials of the study.
    wait = ("+callbacks.wait._target_=tuning_helpers.WaitFor", f"+callbacks.wait.pattern={tmp_path}/b/*_*/.hydra")
    procs = [subprocess.Popen(_sweep_cmd(tmp_path / name, storage, 4, *extra), cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, extra in (("a", (*prune_all, *wait)), ("b", ("hydra/sweeper/pruner=none",)))]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    folders = {name: sorted(p.name for p in (tmp_path / name).glob("*/results.json") if p) for name in "ab"}
    runs = [p.parent for name in "ab" for p in (tmp_path / name).glob("*/results.json")]
    assert len(runs) == 4  # no trial ran twice
    numbers = sorted(int(r.name.split("_")[0]) for r in runs)
    assert numbers == [0, 1, 2, 3], folders  # a job's folder starts with its trial's number
    by_dir = {t.user_attrs[st.RUN_DIR]: t for t in study.trials}
    for run in runs:
        trial = by_dir[str(run)]
        expected = TrialState.PRUNED if run.parent.name == "a" else TrialState.COMPLETE
        assert trial.state == expected, run
        if expected == TrialState.PRUNED:
            assert json.loads((run / "optuna_trial.json").read_text())["state"] == "pruned"
    assert folders["a"] and folders["b"], folders  # both processes ran trials
    assert "Pruned trials" in (tmp_path / "a" / "report.md").read_text()
    summary = (tmp_path / "b" / "optimization_results.yaml").read_text()
    assert "COMPLETE" in summary and not math.isnan(study.best_value)


@pytest.mark.slow  # six kdexp sweeps in child processes (about a minute on 2 cores)
def test_compare_tunes_each_method_at_the_same_budget_and_reports_seeds(tmp_path: Path) -> None:
    from kdexp.tuning.compare import _main, main

    tiny = ["data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32", "teacher=cnn_tiny",
            "student=cnn_tiny", "teacher.train.max_epochs=1", "profile.enabled=false", "logger=none"]
    os.environ["KDEXP_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        code = main(["--methods", "kd", "--trials", "2", "--tune-epochs", "1", "--seeds", "2", "--epochs", "1", "--jobs", "2",
                     "--out", str(tmp_path / "out"), *tiny])
    finally:
        del os.environ["KDEXP_CACHE_DIR"]
    assert code == 0
    lines = (tmp_path / "out" / "compare.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["vanilla", "kd"]  # vanilla added: Δ's baseline
    rows = list(csv.DictReader(lines))
    assert all(float(row["cost"].split(" wall h, ")[1].split(" CPU h")[0]) > 0 for row in rows)  # each child's own CPU time
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{tmp_path / 'out' / 'studies.db'}")
    assert len(study.trials) == 2
    for method in ("vanilla", "kd"):
        assert len(list((tmp_path / "out" / "tuned" / method).glob("*/results.json"))) == 2
        assert len(list((tmp_path / "out" / "default" / method).glob("*/results.json"))) == 2
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "± " in markdown and "2 Optuna trials × 1 epochs" in markdown

    def nothing_left(args: list[str]) -> tuple[int, float]:
        raise AssertionError(f"a finished comparison ran {args}")

    _main(["--methods", "kd", "--trials", "2", "--tune-epochs", "1", "--seeds", "2", "--epochs", "1",  # again: resumes,
           "--out", str(tmp_path / "out"), *tiny], run=nothing_left)  # and has nothing left to run
    assert (tmp_path / "out" / "compare.csv").read_text().splitlines() == lines


def test_compare_refuses_to_choose_on_the_test_set() -> None:
    from kdexp.tuning.compare import main

    assert main(["optimized_metric=student.acc_top1"]) == 2
