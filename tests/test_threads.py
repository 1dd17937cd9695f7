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
