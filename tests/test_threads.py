"""runtime.threads: the cores divided among the jobs that run at once, set before any work."""

from __future__ import annotations

import pytest

from kdexp import threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_auto_divides_the_cores_among_parallel_jobs(four_cores):
    assert threads.resolve_threads("auto") == 4
    assert threads.resolve_threads("auto", {"_target_": "joblib", "n_jobs": 2}) == 2
    assert threads.resolve_threads("auto", {"n_jobs": 3}) == 1
    assert threads.resolve_threads("auto", {"n_jobs": 8}) == 1  # never 0
    assert threads.resolve_threads("auto", {"n_jobs": -1}) == 1  # joblib: one job per core


def test_auto_respects_the_users_omp_num_threads(four_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve_threads("auto", {"n_jobs": 2}) == 3
    assert threads.resolve_threads(2) == 2  # an explicit number wins


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_a_bad_thread_count_names_the_key(four_cores, bad):
    with pytest.raises(ValueError, match=r"runtime\.threads must be auto or an integer >= 1 .*4 cores here"):
        threads.resolve_threads(bad)


def test_a_busy_machine_is_noted(four_cores, monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (3.9, 0.0, 0.0))
    assert "load average 3.9 on 4 cores" in threads.busy_machine_note(4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert threads.busy_machine_note(4) is None


def test_apply_sets_torchs_threads(four_cores, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "busy_machine_note", lambda n: None)
    try:
        assert threads.apply_threads("auto", {"n_jobs": 4}) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_live_runs_share_the_cores_and_take_them_back(four_cores, monkeypatch, tmp_path):
    """runtime.threads=auto: the cores divided among the kdexp runs alive (a file per process),
    and divided again when one finishes; files of runs that died are ignored and removed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    monkeypatch.setattr(threads, "busy_machine_note", lambda n: None)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    before = torch.get_num_threads()
    (tmp_path / str(other.pid)).touch()  # another run, alive
    (tmp_path / "999999999").touch()  # a run killed before it could leave
    try:
        with threads.sharing_cores("auto", folder=tmp_path) as n:
            assert n == 2 and torch.get_num_threads() == 2
            assert (tmp_path / str(os.getpid())).exists() and not (tmp_path / "999999999").exists()
            assert threads.rebalance(every_s=0) is None  # nothing changed
            other.send_signal(signal.SIGSTOP)  # a stopped run (Ctrl-Z) leaves its cores to the others
            time.sleep(0.2)
            assert threads.rebalance(every_s=0) == 4 and (tmp_path / str(other.pid)).exists()
            other.send_signal(signal.SIGCONT)
            time.sleep(0.2)
            assert threads.rebalance(every_s=0) == 2
            other.kill()
            other.wait()
            assert threads.rebalance(every_s=0) == 4 and torch.get_num_threads() == 4
        assert not (tmp_path / str(os.getpid())).exists()  # this run left
        assert threads.rebalance(every_s=0) is None  # no longer sharing
    finally:
        other.kill()
        torch.set_num_threads(before)


def test_a_number_or_the_users_omp_threads_is_never_rebalanced(four_cores, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(threads, "busy_machine_note", lambda n: None)
    before = torch.get_num_threads()
    try:
        with threads.sharing_cores(3, folder=tmp_path) as n:
            assert n == 3 and not list(tmp_path.iterdir())  # not counted among the sharing runs
            assert threads.rebalance(every_s=0) is None
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        with threads.sharing_cores("auto", folder=tmp_path) as n:
            assert n == 1 and threads.rebalance(every_s=0) is None
    finally:
        torch.set_num_threads(before)


def test_a_deterministic_run_keeps_a_thread_count_that_no_other_run_changes(four_cores, monkeypatch, tmp_path):
    """trainer.deterministic: the last bits of a multi-threaded sum depend on the thread count, so
    such a run never joins the sharing (a killed and resumed run must match the uninterrupted one)."""
    import os

    import torch

    monkeypatch.setattr(threads, "busy_machine_note", lambda n: None)
    before = torch.get_num_threads()
    (tmp_path / str(os.getppid())).touch()  # another run alive
    try:
        with threads.sharing_cores("auto", folder=tmp_path, fixed=True) as n:
            assert n == 4 and not (tmp_path / str(os.getpid())).exists()
            assert threads.rebalance(every_s=0) is None
    finally:
        torch.set_num_threads(before)
