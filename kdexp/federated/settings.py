"""The ``federated`` config group, read once and checked: every error names its key."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

ENGINES = ("local", "flower")


@dataclass(frozen=True)
class FederatedSettings:
    """``federated.*`` (configs/federated/<preset>.yaml)."""

    clients: int = 10
    alpha: float = 0.5  # Dirichlet concentration over labels; small = more non-IID
    iid: bool = False  # True: an even random split (alpha unused)
    rounds: int = 20
    local_epochs: float = 1  # a fraction (0.2) = that part of an epoch's batches, a fresh shuffle each round
    clients_per_round: int | None = None  # null = every client every round
    public_size: int = 0  # training images held out as the unlabelled public set
    client_models: tuple[dict[str, Any], ...] | None = None  # one model config per client; null = the student
    target_acc: float | None = None  # rounds-to-target: the first round whose accuracy reaches it (0-1)
    client_eval_size: int | None = None  # test images each client is scored on per round (null = all; the last round: all)
    train_size: int | None = None  # use only this many training images (a seeded subset, the same for every seed); null = all
    engine: str = "local"
    flower: dict[str, Any] | None = None  # the Flower engine's addresses and timeouts (engine=flower)

    @classmethod
    def read(cls, node: dict[str, Any]) -> FederatedSettings:
        """The settings of a ``federated`` config node (a plain dict), or a ValueError naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"federated has no key(s) {unknown}; allowed: {sorted(known)}")
        values = dict(node)
        if values.get("client_models") is not None:
            values["client_models"] = tuple(model_cfg(m) for m in values["client_models"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        def whole(key: str, low: int) -> None:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"federated.{key} must be an integer >= {low}, got {value!r}")

        def number(value: Any) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float))

        for key, low in (("clients", 1), ("rounds", 1), ("public_size", 0)):
            whole(key, low)
        if not number(self.local_epochs) or not self.local_epochs >= 0:
            raise ValueError(
                f"federated.local_epochs must be a number >= 0 (1 = one pass over a client's data per round, 0.2 = a "
                f"fifth of its batches), got {self.local_epochs!r}"
            )
        if not self.iid and (not number(self.alpha) or not self.alpha > 0):
            raise ValueError(
                f"federated.alpha must be > 0 (the Dirichlet concentration over labels: 0.1 very non-IID, 100 nearly "
                f"IID), got {self.alpha!r}; or set federated.iid=true for an even random split"
            )
        if self.clients_per_round is not None:
            whole("clients_per_round", 1)
            if self.clients_per_round > self.clients:
                raise ValueError(
                    f"federated.clients_per_round={self.clients_per_round} exceeds federated.clients={self.clients}"
                )
        if self.client_eval_size is not None:
            whole("client_eval_size", 1)
        if self.train_size is not None:
            whole("train_size", 1)
        if self.target_acc is not None and not 0 < float(self.target_acc) <= 1:
            raise ValueError(f"federated.target_acc is a fraction in (0, 1] (0.85 = 85%), got {self.target_acc!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"federated.engine={self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.client_models is not None and len(self.client_models) != self.clients:
            raise ValueError(
                f"federated.client_models names {len(self.client_models)} models for federated.clients={self.clients} "
                "clients: give one model per client (e.g. [cnn_tiny,cnn_small,cnn_medium] for 3 clients), or null "
                "for the student model on every client"
            )

    @property
    def per_round(self) -> int:
        return self.clients_per_round or self.clients


def model_cfg(model: Any) -> dict[str, Any]:
    """A client model as a model config: a registered name (``cnn_tiny``) or a config mapping."""
    if isinstance(model, str):
        return {"source": "kdexp", "name": model}
    if isinstance(model, dict) and "name" in model:
        return dict(model)
    raise ValueError(f"federated.client_models: each entry is a model name or a config with a name, got {model!r}")
