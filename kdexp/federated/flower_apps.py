"""The Flower apps of ``federated.engine=flower``: the same client and server functions as the
local engine (kdexp.federated.algorithms, run by kdexp.federated.rounds), as a Flower ``ClientApp``
and ``ServerApp`` (Flower's Message API). Imported only inside Flower's processes (the extra
``kdexp[flower]``); kdexp.federated.flower starts them.

Each app reads the run's resolved kdexp config (the run config's ``kdexp-config``, a yaml path) and
builds the same :class:`FederatedExperiment`; a SuperNode started with ``--node-config
"partition-id=<k>"`` is client k, and keeps client k's state (its own model) in its Flower
``Context.state`` between rounds. The ServerApp asks every node which client it is, then runs the
rounds, sending each round's messages through the Grid; after every round it saves the history to
``kdexp-progress`` (a path), which the kdexp process reads when the run ends.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from kdexp.federated.algorithms import Reply, algorithm_for
from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.rounds import RoundsState, run_rounds
from kdexp.federated.wire import Payload
from kdexp.tools.files import save_torch

STATE_KEY = "kdexp-client"


@lru_cache(maxsize=2)
def experiment(config_path: str) -> FederatedExperiment:
    """The run's experiment, built once per process (the data read once)."""
    with open(config_path) as handle:
        return FederatedExperiment.build(yaml.safe_load(handle))


def arrays(payload: Payload) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={k: v.contiguous() for k, v in payload.items()})


def payload(record: ArrayRecord) -> Payload:
    return {k: v.clone() for k, v in record.to_torch_state_dict().items()}


client_app = ClientApp()


@client_app.query()
def which_client(msg: Message, context: Context) -> Message:
    """Which client this SuperNode is (its ``partition-id``)."""
    return Message(RecordDict({"metrics": MetricRecord({"client": int(context.node_config["partition-id"])})}), reply_to=msg)


@client_app.train()
def client_round(msg: Message, context: Context) -> Message:
    """One round of this client: the algorithm's client step on the server's message."""
    exp = experiment(str(context.run_config["kdexp-config"]))
    config = msg.content["config"]
    client, round_ = int(config["client"]), int(config["round"])
    if client != int(context.node_config["partition-id"]):
        raise RuntimeError(f"the message for client {client} reached partition {context.node_config['partition-id']}")
    state = payload(context.state[STATE_KEY]) if STATE_KEY in context.state else None
    new_state, reply, metrics = algorithm_for(exp).client(client, state, payload(msg.content["arrays"]), round_)
    if new_state is not None:
        context.state[STATE_KEY] = arrays(new_state)
    content = RecordDict({"arrays": arrays(reply), "metrics": MetricRecord({**metrics, "client": client})})
    return Message(content, reply_to=msg)


server_app = ServerApp()


def client_nodes(grid: Grid, clients: int, timeout: float) -> dict[int, int]:
    """client → node id, once every client's SuperNode has connected and answered."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(grid.get_node_ids()))} of {clients} SuperNodes connected in {timeout:.0f} s")
        time.sleep(0.5)
    asks = [Message(RecordDict({"config": ConfigRecord({"ask": "client"})}), dst_node_id=n, message_type="query")
            for n in grid.get_node_ids()]
    found = {}
    for reply in grid.send_and_receive(asks, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"a SuperNode failed to say which client it is: {reply.error.reason}")
        found[int(reply.content["metrics"]["client"])] = reply.metadata.src_node_id
    missing = sorted(set(range(clients)) - set(found))
    if missing:
        raise RuntimeError(f"no SuperNode has partition-id {missing} (start one per client, partition-id=0..{clients - 1})")
    return found


def grid_clients(grid: Grid, nodes: dict[int, int], timeout: float):
    """``call_clients`` for kdexp.federated.rounds: the round's messages through the Grid."""

    def call(round_: int, messages: list[tuple[int, Payload]]) -> list[Reply]:
        out = [Message(RecordDict({"arrays": arrays(m), "config": ConfigRecord({"client": k, "round": round_})}),
                       dst_node_id=nodes[k], message_type="train", group_id=str(round_)) for k, m in messages]
        replies: dict[int, Reply] = {}
        for reply in grid.send_and_receive(out, timeout=timeout):
            if reply.has_error():
                raise RuntimeError(f"a client failed in round {round_}: {reply.error.reason}")
            metrics: dict[str, Any] = dict(reply.content["metrics"])
            client = int(metrics.pop("client"))
            replies[client] = (client, payload(reply.content["arrays"]), {k: float(v) for k, v in metrics.items()})
        if len(replies) != len(messages):
            raise TimeoutError(f"round {round_}: {len(replies)} of {len(messages)} clients answered in {timeout:.0f} s")
        return [replies[k] for k, _ in messages]

    return call


@server_app.main()
def server_rounds(grid: Grid, context: Context) -> None:
    """Every round of the run, with the algorithm's server steps; the history saved each round."""
    exp = experiment(str(context.run_config["kdexp-config"]))
    progress = str(context.run_config["kdexp-progress"])
    timeout = float((exp.settings.flower or {}).get("timeout_s", 900))
    alg = algorithm_for(exp)
    nodes = client_nodes(grid, exp.settings.clients, timeout)

    def save(state: RoundsState, record: dict[str, Any]) -> None:
        save_torch(progress, {"history": state.history, "server": state.server, "done": state.round >= exp.settings.rounds})

    run_rounds(exp, alg, RoundsState(alg.init_server()), grid_clients(grid, nodes, timeout), save)
