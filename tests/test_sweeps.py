"""Hydra multirun end to end: job folders, the report at the end of a sweep, failed jobs, the
refusal of re-launching DDP strategies, and the Optuna search."""

import csv
import json
import shlex
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kdexp.tools.config import job_dirname, job_name
from kdexp.sweep import relaunches
from tests.conftest import run_cli


def test_job_folder_names_stay_short_and_distinct() -> None:
    assert job_dirname("method=kd,seed=1") == "method=kd,seed=1"
    long_a, long_b = "x" * 300 + "=1", "x" * 300 + "=2"
    assert len(job_dirname(long_a)) <= 120 and job_dirname(long_a) != job_dirname(long_b)
    assert "/" not in job_dirname("data.root=/a/b")


def test_job_names_show_only_the_swept_keys() -> None:
    """Issue 17, finding 3: constant overrides buried the swept part and ended in a hash."""
    argv = ["-m", "method=vanilla,kd", "seed=range(2)", "+teacher.train.limit_train_batches=0.2",
            "teacher.train.max_epochs=1", "trainer.limit_train_batches=0.2", "data=fake"]
    task = ["+teacher.train.limit_train_batches=0.2", "method=kd", "seed=0", "teacher.train.max_epochs=1",
            "trainer.limit_train_batches=0.2", "data=fake"]
    assert job_name(task, argv) == "method=kd,seed=0"
    assert job_name(["a=1", "b=2"], ["a=1", "b=2"]) == "a=1,b=2"  # nothing swept: every override


def test_an_optuna_trials_folder_names_the_searched_values() -> None:
    """The issue: Optuna job folders read ``0_data.image_shape=[1,28,28],data.test_size=128,…``
    with the searched keys cut off by the hash; the sweeper's searched keys count as swept."""
    params = {"method.temperature": "interval(1.0, 10.0)", "method.kd_weight": "interval(0.0, 1.0)",
              "method.ce_weight": "interval(0.0, 1.0)"}
    argv = ["-m", "hparams_search=kd_optuna", "data=fake", "data.image_shape=[1,28,28]", "data.test_size=128",
            "data.train_size=512", "teacher=cnn_tiny", "trainer.max_epochs=1", "teacher.train.max_epochs=1"]
    task = [*argv[1:], "method.temperature=5.49", "method.kd_weight=0.72", "method.ce_weight=0.6"]
    name = job_name(task, argv, params)
    assert name == "method.ce_weight=0.6,method.kd_weight=0.72,method.temperature=5.49"
    assert job_name(["seed=0", "a=1"], ["-m", "a=1"], {"seed": "0,1"}) == "seed=0"  # a basic sweeper's params
    assert job_name(["a=1", "b=2"], ["a=1", "b=2"], {"c": "4"}) == "a=1,b=2"  # a constant param sweeps nothing


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({"strategy": "ddp", "devices": 2}, True),
        ({"strategy": "auto", "devices": -1}, True),
        ({"strategy": "ddp", "devices": 1, "num_nodes": 2}, True),
        ({"strategy": "ddp_spawn", "devices": 4}, False),
        ({"strategy": "ddp", "devices": 1}, False),
        ({"strategy": "auto", "devices": "0,1"}, True),
    ],
)
def test_which_trainers_relaunch_the_command(trainer: dict, expected: bool) -> None:
    assert relaunches(trainer) is expected


SWEEP = ("data=fake", "data.train_size=64", "data.test_size=32", "teacher=cnn_tiny", "student=cnn_tiny",
         "trainer.max_epochs=1", "teacher.train.max_epochs=1", "profile.enabled=false")


def _sweep(tmp_path: Path, *overrides: str, flags: tuple[str, ...] = ()):
    sweep_dir = tmp_path / "sweep"
    return sweep_dir, run_cli(
        *SWEEP, *overrides, f"hydra.sweep.dir={sweep_dir}", cache_dir=tmp_path / "cache",
        run_dir=tmp_path / "unused", flags=("-m", *flags), timeout=600,
    )


def test_a_2x2_multirun_reports_the_mean_and_std_of_its_results(tmp_path: Path) -> None:
    sweep_dir, proc = _sweep(tmp_path, "method=vanilla,kd", "seed=0,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(sweep_dir.glob("*/results.json"))
    assert len(files) == 4
    for i, (method, seed) in enumerate((m, s) for m in ("vanilla", "kd") for s in (0, 1)):
        (name,) = [f.parent.name for f in files if f.parent.name.startswith(f"{i}_")]
        assert name == f"{i}_method={method},seed={seed}"  # the swept keys only, not SWEEP's constants
    by_method: dict[str, list[float]] = {}
    for f in files:
        results = json.loads(f.read_text())
        by_method.setdefault(results["run"]["method"], []).append(results["student"]["acc_top1"])
    rows = {r["method"]: r for r in csv.DictReader((sweep_dir / "report.csv").open())}
    for method, accs in by_method.items():
        assert float(rows[method]["student_acc_last_mean"]) == pytest.approx(statistics.fmean(accs))
        assert float(rows[method]["student_acc_last_std"]) == pytest.approx(statistics.stdev(accs))
        assert rows[method]["n"] == "2"
    assert (sweep_dir / "report.md").is_file()
    # Issue 17, finding 2: the HParams tab's columns come from one summary at the sweep's root, the
    # union of all runs, not from the first run read (here a vanilla one, without teacher or KD options).
    columns, metrics = _hparams_experiment(sweep_dir)
    assert columns[:2] == ["method", "seed"]  # the swept keys first
    assert {"method.temperature", "teacher", "student", "trainer.max_epochs", "data.train_size"} <= set(columns)
    # The metrics every run has first: TensorBoard's parallel-coordinates view shows the first 5 and
    # drops a run without a value in one, and a vanilla run has no teacher accuracy.
    assert metrics[:2] == ["final/student_acc_top1", "final/student_acc_top1_best_epoch"]
    assert metrics.index("final/teacher_acc_top1") > 1
    for run in sweep_dir.glob("*/tensorboard"):
        session, experiment = _hparams_tags(run)
        assert session and not experiment  # a session per run, no per-run experiment summary
    # The teacher was trained once for the whole sweep and shared through the cache.
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_a_sweep_with_a_failing_job_still_reports_the_others(tmp_path: Path) -> None:
    sweep_dir, proc = _sweep(tmp_path, "method=kd", "method.temperature=4,-1")
    assert proc.returncode != 0  # the sweep says that a job failed ...
    assert "1 of 2 jobs failed" in proc.stdout + proc.stderr
    failed = [json.loads(f.read_text()) for f in sweep_dir.glob("*/results.json")]
    assert sorted(r["run"].get("status", "complete") for r in failed) == ["complete", "failed"]
    rows = {r["options"].split()[0]: r for r in csv.DictReader((sweep_dir / "report.csv").open())}
    assert (rows["temperature=4"]["n"], rows["temperature=4"]["failed"]) == ("1", "0")
    assert (rows["temperature=-1"]["n"], rows["temperature=-1"]["failed"]) == ("0", "1")
    assert "temperature" in (sweep_dir / "report.md").read_text().split("Failed runs:")[1]


def test_multirun_with_a_relaunching_ddp_strategy_is_refused(tmp_path: Path) -> None:
    sweep_dir, proc = _sweep(tmp_path, "method=vanilla,kd", "trainer.accelerator=cpu", "trainer.devices=2",
                             "trainer.strategy=ddp")
    assert proc.returncode == 2
    assert "ddp_spawn" in proc.stderr and "trainer.strategy='ddp'" in proc.stderr
    assert not list(sweep_dir.glob("*/results.json"))


def test_optuna_search_maximises_the_validation_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    sweep_dir, proc = _sweep(tmp_path, "hparams_search=kd_optuna", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    trials = [json.loads(f.read_text()) for f in sweep_dir.glob("*/results.json")]
    assert len(trials) == 2
    assert best.best_value == pytest.approx(max(t["student"]["val_acc_top1"] for t in trials))
    assert set(best.best_params) == {"method.temperature", "method.kd_weight", "method.ce_weight"}
    assert dict(best.trials) == {"RUNNING": 0, "COMPLETE": 2, "PRUNED": 0, "FAIL": 0}  # kdexp's own sweeper (Optuna >= 4)
    assert (sweep_dir / "optuna.db").is_file() and (sweep_dir / "optuna_history.png").is_file()
    for folder in (f.parent.name for f in sweep_dir.glob("*/results.json")):  # named by the searched values
        number, _, name = folder.partition("_")
        assert {item.split("=")[0] for item in name.split(",")} == set(best.best_params), folder


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_the_whole_sweep_and_says_how_to_resume_it(tmp_path: Path, sig: str, code: int) -> None:
    """Issue 17, finding 7: SIGTERM ended only the current job and the sweep went on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    sweep_dir, marker = tmp_path / "sweep", tmp_path / "paused"
    tests = str(REPO / "tests")
    env = {**os.environ, "KDEXP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "kdexp.train", "-m", *SWEEP, "method=vanilla", "logger=none", "seed=0,1",
           f"hydra.sweep.dir={sweep_dir}", "+callbacks.pause._target_=crash_helpers.PauseMidEpoch",
           f"+callbacks.pause.marker={marker}", "+callbacks.pause.epoch=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate()[1][-3000:]
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err[-3000:]
    assert [p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] == ["0_seed=0"]
    record = json.loads((sweep_dir / "0_seed=0" / "results.json").read_text())
    assert record["run"]["status"] == "interrupted"
    assert "no further job starts" in err and f"hydra.sweep.dir={sweep_dir} auto_resume=always" in err
    assert "ckpt_path=last" not in err  # not a single run's advice


def _session_processes(session: int) -> set[int]:
    """The live processes of a session (a test's command started with start_new_session=True)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.add(int(stat.parent.name))
    return pids


@pytest.mark.parametrize(("sig", "code", "to_group"), [("SIGTERM", 143, False), ("SIGINT", 130, True)])
def test_a_signal_stops_a_parallel_sweep_and_every_running_job(tmp_path: Path, sig: str, code: int, to_group: bool) -> None:
    """Round 3, item 2: SIGTERM to a joblib sweep killed the launching process at once and left its
    two workers training to 'complete'; Ctrl-C (a terminal signals the whole process group) printed
    a KeyboardInterrupt traceback and lost one job's record. Now every running job is recorded as
    interrupted, the resume command is printed once, the exit code is 143 / 130, no process is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "KDEXP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "kdexp.train", "-m", *SWEEP, "method=vanilla", "logger=none", "seed=0,1",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}",
           "+callbacks.pause._target_=crash_helpers.PauseMidEpoch", "+callbacks.pause.marker=${paths.output_dir}/paused",
           "+callbacks.pause.epoch=0", "+callbacks.pause.batch=0"]
    jobs = [sweep_dir / "0_seed=0", sweep_dir / "1_seed=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not all((j / "paused").exists() for j in jobs) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all((j / "paused").exists() for j in jobs), proc.communicate()[1][-3000:]
        started = _session_processes(proc.pid)
        assert len(started) >= 3  # the launching process and its two workers
        if to_group:  # what Ctrl-C in a terminal does
            os.killpg(proc.pid, getattr(signal, sig))
        else:  # what a scheduler, `timeout` or `kill` does
            proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=180)
        deadline = time.monotonic() + 10  # the launcher's helper processes end with it
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _session_processes(proc.pid)
    finally:
        for pid in _session_processes(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == code, err[-3000:]
    for job in jobs:
        assert json.loads((job / "results.json").read_text())["run"]["status"] == "interrupted", job
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    (resume,) = [line.strip() for line in err.splitlines() if "auto_resume=always" in line]
    args = [a for a in cmd[3:] if not a.startswith("hydra.sweep.dir=")]
    assert shlex.split(resume) == ["kdexp", *args, f"hydra.sweep.dir={sweep_dir}", "auto_resume=always"]  # pasteable
    assert "'+callbacks.pause.marker=${paths.output_dir}/paused'" in resume  # quoted: a shell would expand it


def _hparams_tags(folder: Path) -> tuple[bool, bytes | None]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    try:
        tags = events.PluginTagToContent("hparams")
    except KeyError:  # no hparams data at all
        tags = {}
    return "_hparams_/session_start_info" in tags, tags.get("_hparams_/experiment")


def _hparams_experiment(folder: Path) -> tuple[list[str], list[str]]:
    from tensorboard.plugins.hparams import metadata

    _, content = _hparams_tags(folder)
    assert content is not None, f"no experiment summary in {folder}"
    experiment = metadata.parse_experiment_plugin_data(content)
    return [h.name for h in experiment.hparam_infos], [m.name.tag for m in experiment.metric_infos]


def test_a_parallel_sweep_divides_the_cores_among_its_jobs(tmp_path: Path) -> None:
    """Hydra's joblib launcher runs 2 jobs at once; each takes cores // 2 threads (at least 1)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from kdexp.threads import available_cores

    sweep_dir, proc = _sweep(tmp_path, "method=vanilla", "seed=0,1", "logger=none",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(f.read_text())["run"] for f in sorted(sweep_dir.glob("*/results.json"))]
    assert [r["seed"] for r in runs] == [0, 1]
    assert {r["threads"] for r in runs} == {max(1, available_cores() // 2)}
