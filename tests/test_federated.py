"""Federated runs (kdexp.federated, kdexp.runner.federated): the split, the checks that name their
key, every method end to end on the tiny preset, resume after a kill, and the Flower engine
against the local one (about a minute, mostly waiting on a SuperLink and three SuperNodes on
127.0.0.1: it starts first, beside the rest of the suite)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdexp.federated.checks import check_federated
from kdexp.federated.settings import FederatedSettings
from kdexp.federated.split import split_data
from kdexp.methods import METHODS, choose_method

TINY = ("federated=tiny", "logger=none")


def test_split_is_seeded_dirichlet_over_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    a = split_data(labels, 5, 0.1, False, 100, 16, seed=3)
    b = split_data(labels, 5, 0.1, False, 100, 16, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.clients, b.clients))
    rows = np.concatenate([a.public, *a.clients])
    assert len(rows) == len(set(rows.tolist())) == 1000  # every image once: public or one client's
    counts = a.histograms(labels, 10)
    assert counts.sum() == 900 and (counts.sum(1) >= 16).all()
    assert (counts.max(1) / counts.sum(1)).mean() > 0.4  # α = 0.1: each client dominated by a few labels
    iid = split_data(labels, 5, 1.0, True, 0, 16, seed=0).histograms(labels, 10)
    assert (iid.sum(1) == 200).all() and iid.min() > 5


@pytest.mark.parametrize("args, message", [
    ((np.arange(50) % 10, 60, 1.0, True, 0, 1), "federated.clients=60 exceeds the 50 training images"),
    ((np.arange(50) % 10, 2, 1.0, True, 50, 1), "federated.public_size=50 leaves no training data"),
    ((np.arange(50) % 10, 5, 1.0, True, 0, 16), "client 0 has 10"),
])
def test_split_errors_name_the_key(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        split_data(*args, seed=0)


@pytest.mark.parametrize("node, message", [
    ({"alpha": 0}, "federated.alpha must be > 0"),
    ({"alpha": -1.0}, "federated.alpha must be > 0"),
    ({"clients": 3, "client_models": ["cnn_tiny", "cnn_small"]}, "names 2 models for federated.clients=3"),
    ({"engine": "ray"}, "federated.engine='ray' is not one of local, flower"),
    ({"clients_per_round": 11}, "clients_per_round=11 exceeds federated.clients=10"),
    ({"colour": 1}, "federated has no key(s) ['colour']"),
    ({"local_epochs": -0.5}, "federated.local_epochs must be a number >= 0"),
])
def test_settings_errors_name_the_key(node, message) -> None:
    with pytest.raises(ValueError) as err:
        FederatedSettings.read(node)
    assert message in str(err.value)


def test_a_fraction_of_a_local_epoch_takes_that_part_of_its_batches() -> None:
    """local_epochs=0.2 on 100 images in batches of 10: 2 of an epoch's 10 batches; 1.5: 15, the
    first 10 being exactly the whole epoch's (a whole number of epochs is unchanged)."""
    import torch

    from kdexp.federated.local import batches, epoch_batches, epoch_steps

    assert [epoch_steps(100, 10, e) for e in (0, 0.01, 0.2, 1, 1.5, 2)] == [0, 1, 2, 10, 15, 20]
    fifth = list(epoch_batches(100, 10, 0.2, torch.Generator().manual_seed(3)))
    assert [len(epoch) for epoch in fifth] == [2]
    one_and_half = list(epoch_batches(100, 10, 1.5, torch.Generator().manual_seed(3)))
    assert [len(epoch) for epoch in one_and_half] == [10, 5]
    whole = batches(100, 10, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(one_and_half[0], whole))
    assert torch.equal(fifth[0][0], whole[0])


def test_method_checks_name_the_key(monkeypatch) -> None:
    with pytest.raises(ValueError, match="public_size=0 holds none out.*fedavg, fd"):
        check_federated(FederatedSettings(public_size=0), choose_method({"name": "feddf"}))
    with pytest.raises(ValueError, match="client_models gives the clients different models.*fedmd"):
        check_federated(FederatedSettings(clients=2, client_models=({"name": "a"}, {"name": "b"})), choose_method({"name": "fedavg"}))
    with pytest.raises(ValueError, match="method=kd is not one: choose one of fedavg, feddf, fedmd, fd"):
        check_federated(FederatedSettings(), choose_method({"name": "kd"}))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'kdexp\[flower\]'"):
        check_federated(FederatedSettings(engine="flower"), choose_method({"name": "fd"}))


def test_the_methods_declare_themselves() -> None:
    declared = {n: METHODS.get(n).federated for n in METHODS.names() if METHODS.get(n).federated}
    assert {n: d.algorithm for n, d in declared.items()} == {"fedavg": "fedavg", "feddf": "feddf", "fedmd": "fedmd", "fd": "fd"}
    assert sorted(n for n, d in declared.items() if d.public_data) == ["feddf", "fedmd"]
    assert [n for n, d in declared.items() if d.heterogeneous] == ["fedmd"]
    assert all(not METHODS.get(n).requires_teacher({}) for n in declared)


@pytest.mark.parametrize("method", ["fedavg", "feddf", "fedmd", "fd"])
def test_every_method_runs_and_records_its_rounds(kdexp_run, method: str) -> None:
    extra = {"feddf": ("method.server_steps=3",), "fedmd": ("federated.client_models=[cnn_tiny,cnn_small,cnn_tiny]",)}
    out = kdexp_run(*TINY, f"method={method}", *extra.get(method, ()))
    assert out.error is None, out.message
    fed = json.loads((out.run_dir / "results.json").read_text())["federated"]
    per = fed["per_round"]
    assert per["round"] == [1, 2] and len(per["bytes_total"]) == 2
    assert fed["total_bytes"] == per["bytes_total"][-1] == sum(per["bytes_up"]) + sum(per["bytes_down"]) > 0
    assert fed["final_accuracy"] == per["accuracy"][-1] and 0 <= fed["final_accuracy"] <= 1
    assert (per["global_test_acc"][-1] is None) == (method in ("fedmd", "fd"))  # no server model: the clients' mean
    assert np.array(fed["client_class_histograms"]).sum() == 240 - 48  # the public images are no client's
    assert "images per client and class" in (out.run_dir / "clients.md").read_text()
    assert "bytes total" in out.output and "final accuracy" in out.output
    if method == "fd":  # bytes from what is sent: a C × C float32 table up; the sum table, counts and round down
        assert per["bytes_up"] == [3 * 10 * 10 * 4] * 2
        assert per["bytes_down"] == [3 * (10 * 10 * 4 + 10 * 4 + 4)] * 2


def test_a_killed_run_resumes_at_its_last_round_with_the_same_numbers(kdexp_run, monkeypatch, tmp_path) -> None:
    """Round 2 of 3 finishes, the run is killed (a signal mid-round 3); ``ckpt_path=last`` resumes
    at round 3 and ends exactly as an uninterrupted run. One thread for all: bit-equal sums need the
    same thread count (runtime.threads=auto re-divides the cores among the runs alive, e.g. a parallel
    test suite's)."""
    one = ("runtime.threads=1",)
    straight = kdexp_run(*TINY, *one, "method=fd", "federated.rounds=3").results["federated"]
    from kdexp.federated import rounds

    real = rounds.LocalClients.__call__

    def killed_in_round_3(self, round_, messages):
        if round_ == 3:
            raise KeyboardInterrupt  # what SIGINT raises
        return real(self, round_, messages)

    monkeypatch.setattr(rounds.LocalClients, "__call__", killed_in_round_3)
    run_dir = tmp_path / "killed"
    assert kdexp_run(*TINY, *one, "method=fd", "federated.rounds=3", run_dir=run_dir).exit_code == 130
    monkeypatch.setattr(rounds.LocalClients, "__call__", real)
    resumed = kdexp_run(*TINY, *one, "method=fd", "federated.rounds=3", "ckpt_path=last", run_dir=run_dir)
    assert "Resuming the federated run after round 2" in resumed.output
    fed = resumed.results["federated"]
    for key in ("accuracy", "client_acc_mean", "bytes_total", "client_loss_mean"):
        assert fed["per_round"][key] == straight["per_round"][key], key
    other = kdexp_run(*TINY, *one, "method=fd", "federated.rounds=3", "ckpt_path=last", "seed=1", run_dir=run_dir)
    assert other.exit_code == 2 and "other settings" in other.message


def test_a_federated_preset_needs_a_federated_method(kdexp_run) -> None:
    out = kdexp_run(*TINY, "method=kd")
    assert out.exit_code == 2 and "method=kd is not one: choose one of fedavg" in out.message
    out = kdexp_run(*TINY, "method=feddf", "federated.public_size=0")
    assert out.exit_code == 2 and "federated.public_size=0" in out.message


@pytest.mark.starts_first  # ~70 s, mostly waiting on Flower's processes (3 s polls, a process per message)
def test_flower_engine_matches_the_local_engine(kdexp_run) -> None:
    """2 rounds, 3 clients on Flower's deployment runtime (a SuperLink and 3 SuperNodes on
    127.0.0.1, ``flwr run``) and on the local engine: the same client and server functions, the
    same seeds, so the same accuracies and bytes (equal: every process runs the same CPU kernels)."""
    pytest.importorskip("flwr", reason="Flower is not installed (pip install 'kdexp[flower]')")
    local = kdexp_run(*TINY, "method=fedavg").results["federated"]
    flower = kdexp_run(*TINY, "method=fedavg", "federated.engine=flower", "federated.flower.port=9391")
    assert flower.error is None, flower.message
    fed = flower.results["federated"]
    assert fed["engine"] == "flower"
    for key in ("global_test_acc", "client_acc_mean", "bytes_up", "bytes_down"):
        assert fed["per_round"][key] == pytest.approx(local["per_round"][key], abs=1e-6), key
    import subprocess

    left = subprocess.run(["pgrep", "-f", str(flower.run_dir / "flower")], capture_output=True, text=True).stdout.split()
    assert not left, f"Flower processes left running: {left}"


def test_kdexp_report_has_a_federated_table(tmp_path) -> None:
    from rich.console import Console

    from kdexp.report.federated import write_federated_report

    def run(seed: int, acc: float) -> dict:
        fed = {"final_accuracy": acc, "total_bytes": 2e6, "iid": False, "alpha": 0.1, "clients": 10, "rounds": 5,
               "accuracy_of": "server model", "rounds_to_target": 3 if acc > 0.7 else None, "target_acc": 0.7}
        return {"run": {"complete": True, "seed": seed}, "federated": fed}

    console = Console(width=200, record=True)
    written = write_federated_report([run(0, 0.72), run(1, 0.68)], tmp_path, lambda r: ("fashion_mnist", "—", "cnn_tiny", "fedavg", "", ""), console)
    text = (tmp_path / "federated.md").read_text()
    assert written == [tmp_path / "federated.md"]
    assert "| fashion_mnist | cnn_tiny | fedavg | Dirichlet α=0.1 | 10 | 5 | 2 | 70.00 ± 2.83 | 2.00 MB | server model | 70%: 3, — |" in text
    assert "Federated runs" in console.export_text()
