"""Reliability: kill and resume and an unwritable or full output folder through the real CLI (a
process is what is under test), a NaN loss and extending a finished run in this process. (Bad
input before training: test_config_errors.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, VANILLA_RUN, run_cli
from crash_helpers import LAUNCHER

TESTS = Path(__file__).resolve().parent

# A tiny, deterministic run: 4 steps per epoch, a constant learning rate (so it can be extended).
BASE = (*VANILLA_RUN, "scheduler=none", "trainer.max_epochs=4", "trainer.deterministic=true")


def start_cli(*overrides: str, run_dir: Path, cache_dir: Path, log_name: str) -> subprocess.Popen:
    """Start ``kdexp`` in the background, its output going to ``<run_dir's parent>/<log_name>``."""
    env = {
        **os.environ,
        "KDEXP_CACHE_DIR": str(cache_dir),
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    log = (run_dir.parent / log_name).open("w")
    cmd = [sys.executable, "-m", "kdexp.train", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before reaching {path.name}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory) -> dict:
    """An uninterrupted run, and two runs killed mid-epoch 1 (SIGTERM, SIGKILL) then resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    cache = tmp / "cache"
    started: list[subprocess.Popen] = []

    def start(*overrides: str, run_dir: Path, log_name: str) -> subprocess.Popen:
        started.append(start_cli(*overrides, run_dir=run_dir, cache_dir=cache, log_name=log_name))
        return started[-1]

    out: dict = {"tmp": tmp, "cache": cache, "full": tmp / "full"}
    try:
        full = start(*BASE, run_dir=tmp / "full", log_name="full.log")
        killed = {}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            marker = tmp / f"{sig.name}.paused"
            pause = ("+callbacks.pause._target_=crash_helpers.PauseMidEpoch", f"+callbacks.pause.marker={marker}")
            killed[sig] = (start(*BASE, *pause, run_dir=tmp / sig.name, log_name=f"{sig.name}.log"), marker)
        for sig, (proc, marker) in killed.items():
            run_dir = tmp / sig.name
            wait_for(marker, proc)  # in the middle of epoch 1: epoch 0's checkpoint is on disk
            assert (run_dir / "checkpoints" / "last.ckpt").is_file()
            proc.send_signal(sig)
            rc = proc.wait(timeout=900)
            record = run_dir / "results.json"
            out[sig] = {
                "rc": rc,
                "run_dir": run_dir,
                "log": (tmp / f"{sig.name}.log").read_text(),
                "left": sorted(p.name for p in run_dir.iterdir()),
                "failure": json.loads(record.read_text())["run"].get("failure") if record.exists() else None,
            }
        assert full.wait(timeout=900) == 0, (tmp / "full.log").read_text()[-3000:]
        resumed = {
            sig: start(*BASE, "ckpt_path=last", run_dir=tmp / sig.name, log_name=f"{sig.name}.resumed.log")
            for sig in killed
        }
        for sig, proc in resumed.items():
            out[sig]["resumed_rc"] = proc.wait(timeout=900)
            out[sig]["resumed_log"] = (tmp / f"{sig.name}.resumed.log").read_text()
    finally:
        for proc in started:  # a failed wait must not leave runs behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def claims_completion(run_dir: Path) -> bool:
    """A run folder's results.json may record a failure (for sweeps and reports), never success."""
    path = run_dir / "results.json"
    if not path.exists():
        return False
    run = json.loads(path.read_text())["run"]
    return run.get("complete", False) or run.get("status") not in ("failed", "interrupted")


def test_sigterm_exits_nonzero_keeps_checkpoints_and_claims_nothing(resume_runs) -> None:
    run = resume_runs[signal.SIGTERM]
    assert run["rc"] == 143, run["log"][-3000:]
    assert "Traceback" not in run["log"]
    assert "kdexp: interrupted: received SIGTERM" in run["log"] and "ckpt_path=last" in run["log"]
    assert "checkpoints" in run["left"]  # (its results.json, if any, recorded the failure: see failure)
    # Lightning stops after the batch it was in; the last checkpoint is the last finished epoch's.
    assert run["failure"]["kind"] == "interrupted" and run["failure"]["epoch"] == 1
    assert run["failure"]["signal"] == "SIGTERM" and run["failure"]["step"] >= 4
    assert run["failure"]["last_checkpoint"].endswith("last.ckpt")
    assert "it holds the end of epoch 0" in run["log"]  # names the epoch last.ckpt holds
    assert not (run["run_dir"] / "failure.json").exists()  # one record: results.json


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumed_with_ckpt_path_last_matches_the_uninterrupted_run(resume_runs, sig) -> None:
    run = resume_runs[sig]
    if sig == signal.SIGKILL:
        assert run["rc"] == -signal.SIGKILL and "results.json" not in run["left"]
    assert run["resumed_rc"] == 0, run["resumed_log"][-3000:]
    assert "Restoring states from the checkpoint" in run["resumed_log"]
    full, resumed = results(resume_runs["full"]), results(run["run_dir"])
    assert resumed["run"]["complete"] and resumed["run"]["epochs"] == full["run"]["epochs"] == 4
    assert resumed["run"]["resumed_from"].endswith("checkpoints/last.ckpt")
    assert resumed["test_metrics"] == full["test_metrics"]
    assert resumed["student"] == full["student"]
    a = torch.load(resume_runs["full"] / "student.pt", weights_only=True)
    b = torch.load(run["run_dir"] / "student.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit the same weights
    if sig == signal.SIGTERM:  # the interruption is recorded in the finished run's results
        assert resumed["run"]["earlier_failures"][0]["kind"] == "interrupted"
        assert resumed["run"]["status"] == "complete" and "failure" not in resumed["run"]


def test_checkpoints_hold_plain_containers(resume_runs) -> None:
    """torch.load(weights_only=True) — the default of current torch — reads them without errors."""
    ckpt = torch.load(resume_runs["full"] / "checkpoints" / "last.ckpt", weights_only=True)
    hparams = ckpt["hyper_parameters"]
    assert type(hparams) is dict and type(hparams["method"]) is dict and type(hparams["optimizer"]) is dict
    assert ckpt["epoch"] == 3 and "loops" in ckpt  # the last (0-based) epoch, whatever its val/acc
    assert type(ckpt["kdexp"]["fingerprint"]) is dict and ckpt["kdexp"]["max_epochs"] == 4


def test_extending_a_finished_run_keeps_its_results(resume_runs, kdexp_run) -> None:
    """ckpt_path=last in a finished run's folder: the earlier results and weights are kept aside."""
    run_dir = resume_runs["tmp"] / "extended"
    import shutil

    shutil.copytree(resume_runs["full"], run_dir)
    before = (run_dir / "results.json").read_text()
    outcome = kdexp_run(*BASE, "trainer.max_epochs=5", "ckpt_path=last", cache_dir=resume_runs["cache"], run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    assert results(run_dir)["run"]["epochs"] == 5
    kept = [p for p in run_dir.glob("results.*.json")]
    assert len(kept) == 1 and kept[0].read_text() == before
    assert len(list(run_dir.glob("student.*.pt"))) == 1


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(kdexp_run, tmp_path: Path) -> None:
    # lr × 1e36 from epoch 1: the weights blow up at its first step, the next losses overflow.
    outcome = kdexp_run(
        *BASE, "scheduler=multistep", "scheduler.milestones=[1]", "scheduler.gamma=1e36",
        cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 3, outcome.message
    assert "Traceback" not in outcome.message + outcome.output
    assert re.search(r"kdexp: training failed: train/loss is (nan|inf) at epoch 1, global step \d+", outcome.message)
    assert re.search(r"ce_loss=(nan|inf) \(weight 1\)", outcome.message), outcome.message[-2000:]
    assert "last good checkpoint is kept" in outcome.message
    run_dir = tmp_path / "run"
    assert not claims_completion(run_dir)
    failure = results(run_dir)["run"]["failure"]
    assert failure["kind"] == "training failed" and failure["epoch"] == 1
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_guard_refuses_to_checkpoint_non_finite_weights() -> None:
    from kdexp.callbacks import FiniteLossGuard, NonFiniteLossError

    class Trainer:  # what the guard reads
        current_epoch, global_step = 2, 8

    state = {"student.fc.weight": torch.tensor([1.0, float("inf")]), "student.fc.num": torch.tensor(3)}
    with pytest.raises(NonFiniteLossError, match="not saved"):
        FiniteLossGuard().on_save_checkpoint(Trainer(), None, {"state_dict": state})
    FiniteLossGuard().on_save_checkpoint(Trainer(), None, {"state_dict": {"w": torch.ones(2)}})


# --- unwritable and full output folders -------------------------------------------------------
def test_run_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli(*BASE, cache_dir=tmp_path / "cache", run_dir=blocker / "run")
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"kdexp: cannot write output: hydra.run.dir='{blocker}/run': {blocker} is not a directory" in proc.stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders (covered by the test above)")
def test_read_only_log_dir_is_a_clear_error(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        proc = run_cli(*BASE, f"paths.log_dir={read_only}", cache_dir=tmp_path / "cache", run_dir=read_only / "run")
    finally:
        read_only.chmod(0o755)
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert f"{read_only} is not writable" in proc.stderr


@pytest.mark.parametrize("full, named", [("checkpoints", "checkpoints"), (".results.json.", "results.json")])
def test_full_disk_is_a_clear_error(tmp_path: Path, full: str, named: str) -> None:
    """``full``: where writes fail (a prefix: the writer's temporary files start with '.<name>.');
    the message names the file being written (``named``), never a temporary file."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "KDEXP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore",
           "KDEXP_TEST_FULL": str(run_dir / full)}
    cmd = [sys.executable, "-c", LAUNCHER, f"hydra.run.dir={run_dir}", *BASE, "trainer.max_epochs=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"kdexp: cannot write output: {run_dir / named}" in proc.stderr and ".tmp" not in proc.stderr
    assert "No space left on device" in proc.stderr
    assert not claims_completion(run_dir)
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no partial file left
