"""The rounds, engine-independent: per round the server's messages go to the round's clients
(through a ``call_clients`` the engine provides), their replies are aggregated, the global model
(where there is one) is scored, and the round's record is kept: accuracies, bytes each way, wall
time. The local engine calls the clients in this process; the Flower engine sends the same
messages through a Flower Grid."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kdexp.federated.algorithms import Algorithm, Reply
from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.local import accuracy
from kdexp.federated.wire import Payload, nbytes

CallClients = Callable[[int, list[tuple[int, Payload]]], list[Reply]]


@dataclass
class RoundsState:
    """Where a run stands after its last finished round: what a resume starts from."""

    server: Payload
    history: list[dict[str, Any]] = field(default_factory=list)
    clients: dict[int, Payload] = field(default_factory=dict)  # the local engine's client states

    @property
    def round(self) -> int:
        return len(self.history)


def run_rounds(
    exp: FederatedExperiment, alg: Algorithm, state: RoundsState, call_clients: CallClients,
    after_round: Callable[[RoundsState, dict[str, Any]], None],
) -> RoundsState:
    """Rounds ``state.round + 1`` … ``federated.rounds``; ``after_round(state, record)`` after each
    (save, log)."""
    for round_ in range(state.round + 1, exp.settings.rounds + 1):
        start = time.perf_counter()
        messages = [(k, alg.message(state.server, round_, k)) for k in exp.participants(round_)]
        replies = call_clients(round_, messages)
        state.server = alg.aggregate(state.server, replies, round_)
        down, up = sum(nbytes(m) for _, m in messages), sum(nbytes(r) for _, r, _ in replies)
        record = round_record(exp, alg, state, replies, round_, up, down)
        record["wall_s"] = round(time.perf_counter() - start, 3)
        state.history.append(record)
        after_round(state, record)
    return state


def round_record(
    exp: FederatedExperiment, alg: Algorithm, state: RoundsState, replies: list[Reply], round_: int, up: int, down: int
) -> dict[str, Any]:
    """One round's numbers (accuracies 0-1, bytes)."""
    model = alg.server_model(state.server)
    val = accuracy(model, *exp.val) if model is not None and exp.val is not None else None
    test = accuracy(model, *exp.test) if model is not None else None
    accs = [m["acc"] for _, _, m in replies]
    total = (state.history[-1]["bytes_total"] if state.history else 0) + up + down
    return {
        "round": round_,
        "clients": [k for k, _, _ in replies],
        "global_val_acc": val,
        "global_test_acc": test,
        "client_acc": accs,
        "client_acc_mean": statistics.fmean(accs),
        "client_acc_min": min(accs),
        "client_acc_max": max(accs),
        "client_loss_mean": statistics.fmean(m["loss"] for _, _, m in replies),
        "client_val_acc_mean": statistics.fmean(m["val_acc"] for _, _, m in replies) if all("val_acc" in m for _, _, m in replies) else None,
        "accuracy": test if test is not None else statistics.fmean(accs),  # the run's headline number
        "bytes_up": up,
        "bytes_down": down,
        "bytes_total": total,
    }


class LocalClients:
    """The local engine's clients: one after another in this process, their states kept here."""

    def __init__(self, alg: Algorithm, states: dict[int, Payload]) -> None:
        self.alg, self.states = alg, states

    def __call__(self, round_: int, messages: list[tuple[int, Payload]]) -> list[Reply]:
        replies = []
        for client, message in messages:
            state, reply, metrics = self.alg.client(client, self.states.get(client), message, round_)
            if state is not None:
                self.states[client] = state
            replies.append((client, reply, metrics))
        return replies


def run_local(
    exp: FederatedExperiment, alg: Algorithm, start: RoundsState | None,
    after_round: Callable[[RoundsState, dict[str, Any]], None],
) -> RoundsState:
    """The local engine: deterministic for a seed; resumable from any saved ``RoundsState``."""
    state = start or RoundsState(alg.init_server())
    return run_rounds(exp, alg, state, LocalClients(alg, state.clients), after_round)
