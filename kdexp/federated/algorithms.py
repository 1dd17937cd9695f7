"""Each federated method's server and client steps, registered under its ``federated.algorithm``.

An algorithm is four pure functions of the run's :class:`FederatedExperiment` and the payloads
(kdexp.federated.wire) that cross the network, so the local engine and the Flower apps run the
very same code:

* ``init_server()`` → the server's state;
* ``message(server, round, client)`` → what the server sends the client this round;
* ``client(client, state, message, round)`` → (the client's new state, its reply, its metrics);
  a client's state (its own model, for the methods without a global one) stays with the client;
* ``aggregate(server, replies, round)`` → the server's new state, from [(client, reply, metrics)].

``server_model(server)`` is the global model where the method has one (None otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.local import accuracy, epoch_steps, fit_logits, logits_of, train_epochs
from kdexp.federated.wire import Payload, weights_of
from kdexp.losses import kd_loss
from kdexp.registry import Registry

Reply = tuple[int, Payload, dict[str, float]]
ALGORITHMS: Registry[type["Algorithm"]] = Registry("federated algorithm", key="federated.algorithm")


class Algorithm:
    """The shared parts: a client's local training with its method module, its score, averaging."""

    def __init__(self, exp: FederatedExperiment) -> None:
        self.exp, self.options = exp, exp.method.options

    # --- to implement ---------------------------------------------------------------------------
    def init_server(self) -> Payload:
        return {}

    def message(self, server: Payload, round_: int, client: int) -> Payload:
        raise NotImplementedError

    def client(self, client: int, state: Payload | None, message: Payload, round_: int) -> tuple[Payload | None, Payload, dict[str, float]]:
        raise NotImplementedError

    def aggregate(self, server: Payload, replies: list[Reply], round_: int) -> Payload:
        raise NotImplementedError

    def server_model(self, server: Payload) -> nn.Module | None:
        return None

    # --- helpers --------------------------------------------------------------------------------
    def learner(self, client: int | None, weights: Payload | None) -> Any:
        """The method's module around the client's model, with ``weights`` if given."""
        module = self.exp.new_module(client)
        if weights:
            module.student.load_state_dict(weights)
        return module

    def train_private(self, module: Any, client: int, round_: int) -> dict[str, float]:
        """``federated.local_epochs`` on the client's own data; its loss, size and test score."""
        exp = self.exp
        x, y = exp.client_data(client)
        loss = train_epochs(
            module, x, y, exp.settings.local_epochs, int(exp.cfg["data"]["batch_size"]),
            exp.cfg["optimizer"], exp.cfg["scheduler"], exp.seed_of(round_, client + 1, 1),
        )
        ex, ey = exp.client_eval(round_)
        metrics = {"loss": loss, "samples": float(len(y)), "acc": accuracy(module.student, ex, ey)}
        if round_ >= exp.settings.rounds:  # the last round: the validation score a sweeper may optimise
            metrics["val_acc"] = accuracy(module.student, *(exp.val or exp.test))
        return metrics


def average(payloads: list[Payload], weights: list[float]) -> Payload:
    """The weighted mean of each floating tensor; other tensors (BatchNorm's step counter) from
    the first payload."""
    total = float(sum(weights))
    out = {}
    for name, first in payloads[0].items():
        if first.is_floating_point():
            out[name] = sum(w / total * p[name].double() for w, p in zip(weights, payloads)).to(first.dtype)
        else:
            out[name] = first.clone()
    return out


@ALGORITHMS.register("fedavg")
class FedAvg(Algorithm):
    """McMahan et al. 2017: the global weights down, trained weights up, their mean weighted by
    each client's sample count."""

    def init_server(self) -> Payload:
        return weights_of(self.exp.new_module(None).student)

    def message(self, server: Payload, round_: int, client: int) -> Payload:
        return server

    def client(self, client, state, message, round_):
        module = self.learner(client, message)
        metrics = self.train_private(module, client, round_)
        return None, weights_of(module.student), metrics

    def aggregate(self, server, replies, round_):
        return average([r for _, r, _ in replies], [m["samples"] for _, _, m in replies])

    def server_model(self, server: Payload) -> nn.Module:
        return self.learner(None, server).student


@ALGORITHMS.register("feddf")
class FedDF(FedAvg):
    """Lin et al. 2020: FedAvg's mean, then distilled on the public images from the mean of the
    client models' logits (T² · KL at ``method.temperature``), ``server_steps`` Adam steps."""

    def aggregate(self, server, replies, round_):
        fused = super().aggregate(server, replies, round_)
        public = self.exp.public_x
        teachers = [self.learner(None, r).student for _, r, _ in replies]
        targets = torch.stack([logits_of(t, public) for t in teachers]).mean(0)
        model = self.learner(None, fused).student
        o, temperature = self.options, float(self.options.temperature)
        fit_logits(
            model, public, targets, lambda z, t: kd_loss(z, t, temperature),
            o.server_steps, o.server_batch_size, o.server_lr, self.exp.seed_of(round_, 0, 2),
        )
        return weights_of(model)


@ALGORITHMS.register("fedmd")
class FedMD(Algorithm):
    """Li & Wang 2019: each client keeps its own model (any architecture). Down: the consensus
    (mean logits) on last round's public subset and this round's subset; the client digests the
    consensus (L1 on logits), revisits its private data, and sends its logits on the new subset."""

    def subset(self, round_: int) -> Tensor:
        n = len(self.exp.public_x)
        size = min(int(self.options.public_per_round), n)
        generator = torch.Generator().manual_seed(self.exp.seed_of(round_, 0, 3))
        return torch.randperm(n, generator=generator)[:size].sort().values.to(torch.int32)

    def init_server(self) -> Payload:
        return {"consensus": torch.empty(0, self.exp.num_classes), "consensus_index": torch.empty(0, dtype=torch.int32)}

    def message(self, server, round_, client):
        return {**server, "index": self.subset(round_)}

    def client(self, client, state, message, round_):
        module = self.learner(client, state)
        public, o = self.exp.public_x, self.options
        if len(message["consensus"]):  # digest
            inputs = public[message["consensus_index"].long()]
            fit_logits(
                module.student, inputs, message["consensus"], lambda z, t: F.l1_loss(z, t),
                epoch_steps(len(inputs), o.digest_batch_size, o.digest_epochs), o.digest_batch_size, o.digest_lr,
                self.exp.seed_of(round_, client + 1, 4),
            )
        metrics = self.train_private(module, client, round_)  # revisit
        logits = logits_of(module.student, public[message["index"].long()])
        return weights_of(module.student), {"logits": logits, "index": message["index"]}, metrics

    def aggregate(self, server, replies, round_):
        return {
            "consensus": torch.stack([r["logits"] for _, r, _ in replies]).mean(0),
            "consensus_index": replies[0][1]["index"],
        }


@ALGORITHMS.register("fd")
class FD(Algorithm):
    """Jeong et al. 2018: each client keeps its own model and sends its per-class mean logits (a
    C × C table, NaN rows for labels it lacks). Down: the sum of the clients' tables and how many
    clients have each label; a client subtracts its own last table, so its teacher for label y is
    the other clients' mean."""

    def init_server(self) -> Payload:
        c = self.exp.num_classes
        return {"sum": torch.zeros(c, c), "count": torch.zeros(c), "round": torch.zeros(1, dtype=torch.int32)}

    def message(self, server, round_, client):
        return server

    def client(self, client, state, message, round_):
        state = state or {}
        module = self.learner(client, {k[2:]: v for k, v in state.items() if k.startswith("w.")})
        module.class_targets = self.targets(message, state)
        metrics = self.train_private(module, client, round_)
        table = self.class_means(module.student, client)
        new_state = {**{f"w.{k}": v for k, v in weights_of(module.student).items()},
                     "own": table, "own_round": torch.tensor([round_], dtype=torch.int32)}
        return new_state, {"class_logits": table}, metrics

    def targets(self, message: Payload, state: Payload) -> Tensor | None:
        """The other clients' per-class mean logits (NaN rows: no other client has the label)."""
        if not int(message["round"][0]):
            return None
        total, count = message["sum"].clone(), message["count"].clone()
        if "own" in state and int(state["own_round"][0]) == int(message["round"][0]):  # its own table is in the sum
            mine = ~torch.isnan(state["own"]).any(1)
            total[mine] -= state["own"][mine]
            count[mine] -= 1
        out = total / count.clamp(min=1).unsqueeze(1)
        out[count <= 0] = math.nan
        return out

    def class_means(self, model: nn.Module, client: int) -> Tensor:
        x, y = self.exp.client_data(client)
        logits = logits_of(model, x)
        c = self.exp.num_classes
        table = torch.full((c, c), math.nan)
        for label in range(c):
            rows = y == label
            if rows.any():
                table[label] = logits[rows].mean(0)
        return table

    def aggregate(self, server, replies, round_):
        tables = torch.stack([r["class_logits"] for _, r, _ in replies])
        present = ~torch.isnan(tables).any(2)
        return {
            "sum": torch.nan_to_num(tables).sum(0),
            "count": present.sum(0).float(),
            "round": torch.tensor([round_], dtype=torch.int32),
        }


def algorithm_for(exp: FederatedExperiment) -> Algorithm:
    """The algorithm the run's method declares (``federated.algorithm``)."""
    return ALGORITHMS.get(exp.method.cls.federated.algorithm)(exp)
