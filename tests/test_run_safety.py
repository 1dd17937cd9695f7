"""Nothing lost, nothing resumed wrongly (issue 19), with real processes where a process is under
test (run folders named by time and pid, a lock held by a live run, signals, the terminal's
encoding) and in this process otherwise: run folders that belong to one run, finished results that a failed extension cannot replace, a
last.ckpt that is the newest epoch, resumes that refuse a checkpoint of another run, SIGINT handled
like SIGTERM, and the atomic writer."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, VANILLA_RUN

TESTS = Path(__file__).resolve().parent
TINY = (*VANILLA_RUN, "trainer.max_epochs=2")


def env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KDEXP_CACHE_DIR": str(cache),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(REPO), os.environ.get("PYTHONPATH")])),
    }


def start(*overrides: str, cache: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kdexp.train", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env(cache), stdout=log.open("w"), stderr=subprocess.STDOUT)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_two_runs_started_in_the_same_second_keep_their_own_results(tmp_path: Path) -> None:
    """No hydra.run.dir: the default folder has one-second resolution plus the process id."""
    log_dir = tmp_path / "outputs"
    while time.time() % 1 > 0.3:  # start both early in one second (they share it on any machine)
        time.sleep(0.05)
    procs = [
        start(*TINY, f"paths.log_dir={log_dir}", f"seed={seed}", cache=tmp_path / "cache", log=tmp_path / f"{seed}.log")
        for seed in (0, 1)
    ]
    rcs = [p.wait(timeout=600) for p in procs]
    assert rcs == [0, 0], [(tmp_path / f"{s}.log").read_text()[-2000:] for s in (0, 1)]
    folders = sorted(p.parent for p in log_dir.rglob("results.json"))
    assert len(folders) == 2, folders
    seeds = sorted(record(f)["run"]["seed"] for f in folders)
    assert seeds == [0, 1]
    for folder in folders:
        assert record(folder)["run"]["status"] == "complete" and (folder / "student.pt").is_file()
        overrides = (folder / ".hydra" / "overrides.yaml").read_text()
        assert f"seed={record(folder)['run']['seed']}" in overrides  # describes its own run


@pytest.fixture(scope="module")
def held(tmp_path_factory) -> dict:
    """A run paused mid-epoch 1 (it holds its folder), a second run on that folder, then Ctrl-C."""
    tmp = tmp_path_factory.mktemp("held")
    run_dir, marker = tmp / "run", tmp / "paused"
    pause = ("+callbacks.pause._target_=crash_helpers.PauseMidEpoch", f"+callbacks.pause.marker={marker}")
    first = start(f"hydra.run.dir={run_dir}", *TINY, "trainer.max_epochs=3", *pause, cache=tmp / "cache", log=tmp / "first.log")
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert first.poll() is None, (tmp / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        second = subprocess.run(
            [sys.executable, "-m", "kdexp.train", f"hydra.run.dir={run_dir}", *TINY],
            cwd=REPO, env=env(tmp / "cache"), capture_output=True, text=True, timeout=600,
        )
        after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
        first.send_signal(signal.SIGINT)
        rc = first.wait(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    return {"run_dir": run_dir, "second": second, "before": before, "after": after, "rc": rc,
            "log": (tmp / "first.log").read_text(), "overrides": [*TINY, "trainer.max_epochs=3", *pause]}


def test_a_folder_held_by_a_live_run_is_refused_and_left_alone(held) -> None:
    second = held["second"]
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    message = " ".join(second.stderr.split())
    assert f"hydra.run.dir='{held['run_dir']}' is in use by another run that is still going" in message
    assert held["after"] == held["before"]  # not even .hydra/overrides.yaml was rewritten


def test_sigint_is_handled_like_sigterm(held) -> None:
    assert held["rc"] == 130, held["log"][-3000:]
    assert "Traceback" not in held["log"]
    assert "kdexp: interrupted: received SIGINT" in held["log"] and "ckpt_path=last" in held["log"]
    lines = held["log"].splitlines()
    resume = lines[lines.index(next(line for line in lines if line.endswith("Resume with:"))) + 1]
    assert shlex.split(resume) == ["kdexp", *held["overrides"], "ckpt_path=last", f"hydra.run.dir={held['run_dir']}"]
    run = record(held["run_dir"])["run"]
    assert run["status"] == "interrupted" and run["failure"]["signal"] == "SIGINT"
    assert run["failure"]["epoch"] == 1 and run["failure"]["last_checkpoint"].endswith("last.ckpt")


@pytest.fixture(scope="module")
def finished(kdexp_runs, tmp_path_factory) -> dict:
    """A finished 3-epoch run whose validation accuracy never improves after epoch 0 (lr 1e-12)."""
    tmp = tmp_path_factory.mktemp("finished")
    run_dir = tmp / "run"
    outcome = kdexp_runs(*TINY, "trainer.max_epochs=3", "optimizer.lr=1e-12", cache_dir=tmp / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    return {"tmp": tmp, "run_dir": run_dir, "cache": tmp / "cache"}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


def test_last_ckpt_is_the_newest_epoch(finished) -> None:
    ckpt = torch.load(finished["run_dir"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2  # the last epoch, though val/acc peaked at epoch 0
    assert record(finished["run_dir"])["run"]["best_epoch"] == 1  # the best-val checkpoint is kept too


def test_stretching_a_one_cycle_run_is_refused_before_training(finished, kdexp_run) -> None:
    before = files(finished["run_dir"])
    outcome = kdexp_run(*TINY, "trainer.max_epochs=5", "optimizer.lr=1e-12", "ckpt_path=last",
                        cache_dir=finished["cache"], run_dir=finished["run_dir"])
    assert outcome.exit_code == 2, outcome.message
    message = outcome.message
    assert "trainer.max_epochs=5 but the checkpoint" in message and "scheduler.name=onecycle" in message
    assert "cannot be stretched" in message and "Traceback" not in message + outcome.output
    assert files(finished["run_dir"]) == before  # the finished record, weights and checkpoints as they were
    assert record(finished["run_dir"])["run"]["status"] == "complete"


@pytest.mark.parametrize(
    "change, listed",
    [
        (("student=cnn_small",), "student.name: checkpoint 'cnn_tiny', now 'cnn_small'"),
        (("data.batch_size=8",), "data.batch_size: checkpoint 16, now 8"),
        (("method=kd", "teacher=cnn_tiny"), "method.name: checkpoint 'vanilla', now 'kd'"),
        (("optimizer=adamw",), "optimizer.name: checkpoint 'sgd', now 'adamw'"),
    ],
    ids=["student", "batch_size", "method", "optimizer"],
)
def test_resume_refuses_a_checkpoint_of_another_run(finished, kdexp_run, change, listed) -> None:
    before = files(finished["run_dir"])
    outcome = kdexp_run(*TINY, "trainer.max_epochs=3", "optimizer.lr=1e-12", *change, "ckpt_path=last",
                        cache_dir=finished["cache"], run_dir=finished["run_dir"])
    assert outcome.exit_code == 2, outcome.message
    message = outcome.message
    assert "belongs to a different run" in message and listed in message and "init_weights=" in message
    assert "Traceback" not in message + outcome.output and "train/loss" not in outcome.output  # nothing trained
    assert files(finished["run_dir"]) == before


def test_init_weights_starts_a_new_run_from_old_weights(finished, kdexp_run) -> None:
    new_dir = finished["tmp"] / "new"
    ckpt = finished["run_dir"] / "checkpoints" / "last.ckpt"
    outcome = kdexp_run(*TINY, "data.batch_size=8", "trainer.max_epochs=1", "optimizer.lr=1e-12", f"init_weights={ckpt}",
                        cache_dir=finished["cache"], run_dir=new_dir)
    assert outcome.exit_code == 0, outcome.message
    old = torch.load(finished["run_dir"] / "student.pt", weights_only=True)
    new = torch.load(new_dir / "student.pt", weights_only=True)
    weights = [k for k in old if "running_" not in k and "num_batches" not in k]  # BatchNorm statistics move
    assert weights and all(torch.allclose(old[k], new[k], atol=1e-6) for k in weights)  # lr 1e-12: unchanged
    assert "ckpt_path=" not in (new_dir / ".hydra" / "overrides.yaml").read_text()


# --- the atomic writer ---------------------------------------------------------------------------
def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_names_the_target(tmp_path: Path, monkeypatch) -> None:
    from kdexp.tools import files as tools_files

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tools_files.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        tools_files.write_atomic(target, b"x" * 1000)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_failure_never_replaces_a_finished_record(tmp_path: Path) -> None:
    from kdexp.run_record import failure_record, is_finished, record_failure

    finished = {"run": {"status": "complete", "complete": True, "seed": 0}, "student": {"acc_top1": 0.9}}
    (tmp_path / "results.json").write_text(json.dumps(finished))
    assert record_failure(tmp_path, {"seed": 0}, failure_record("interrupted", "x")) is None
    assert json.loads((tmp_path / "results.json").read_text()) == finished and is_finished(tmp_path)
    other = tmp_path / "other"
    record_failure(other, {"seed": 1}, failure_record("interrupted", "first", epoch=1))
    record_failure(other, {"seed": 1}, failure_record("training failed", "second", epoch=2))
    run = json.loads((other / "results.json").read_text())["run"]
    assert run["status"] == "failed" and run["failure"]["message"] == "second"
    assert [f["message"] for f in run["earlier_failures"]] == ["first"] and not is_finished(other)


# --- output encodings ----------------------------------------------------------------------------
def test_unencodable_characters_degrade_to_ascii() -> None:
    from kdexp.console import ERRORS

    assert "92.1 ± 0.3 → cnn_tiny • 5.0×".encode("ascii", errors=ERRORS) == b"92.1 +/- 0.3 -> cnn_tiny * 5.0x"
    assert "±→€".encode("latin-1", errors=ERRORS) == "±->?".encode("latin-1")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_non_utf8_terminal_never_crashes_a_run_or_the_report(tmp_path: Path, encoding: str) -> None:
    environ = {**env(tmp_path / "cache"), "PYTHONIOENCODING": encoding}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "kdexp.train", f"hydra.run.dir={run_dir}", *TINY, "trainer.max_epochs=1"],
        cwd=REPO, env=environ, capture_output=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode(encoding)[-3000:]
    assert record(run_dir)["run"]["status"] == "complete"
    report = subprocess.run(
        [sys.executable, "-c", "import sys; from kdexp.report import main; sys.exit(main(sys.argv[1:]))",
         str(run_dir), "--out", str(tmp_path / "report")],
        cwd=REPO, env=environ, capture_output=True, timeout=600,
    )
    assert report.returncode == 0, report.stderr.decode(encoding)[-3000:]
    assert b"Traceback" not in report.stderr


def test_resuming_a_finished_run_keeps_it_as_it_is(tmp_path: Path, caplog) -> None:
    """Round 3, item 7: ckpt_path=last on a finished run trained nothing, then lost
    student.val_acc_top1 from results.json and exited 2 (optimized_metric). Now: it says that the
    run is complete and keeps every number; a finished checkpoint without its results is refused."""
    import kdexp
    from kdexp.errors import SetupError
    from kdexp.runner.entry import DEFAULT_METRIC, optimized_value

    run_dir = tmp_path / "run"
    overrides = [*VANILLA_RUN, "trainer.max_epochs=1", f"paths.root_dir={tmp_path}"]
    first = kdexp.run(overrides, output_dir=run_dir)
    before = files(run_dir)
    with caplog.at_level("INFO", logger="kdexp"):
        again = kdexp.run([*overrides, "ckpt_path=last"], output_dir=run_dir)
    assert again == first and files(run_dir) == before  # nothing trained, nothing rewritten or archived
    assert optimized_value(again, DEFAULT_METRIC) == first["student"]["val_acc_top1"]  # the sweeper's value: exit 0
    assert "already complete" in caplog.text and "larger trainer.max_epochs" in caplog.text
    with pytest.raises(SetupError, match="has already trained all 1 epochs of trainer.max_epochs=1") as err:
        kdexp.run([*overrides, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], output_dir=tmp_path / "other")
    assert err.value.exit_code == 2
