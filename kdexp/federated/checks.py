"""Checks of a federated run that need its method's declaration (kdexp.methods.declarations.Federated),
before any data is read: each error names the key and what is allowed."""

from __future__ import annotations

import importlib.util

from kdexp.federated.settings import FederatedSettings
from kdexp.methods import METHODS, MethodChoice


def federated_methods(**declared: bool) -> list[str]:
    """The registered federated methods, optionally those whose declaration has ``declared``."""
    names = []
    for name in METHODS.names():
        decl = METHODS.get(name).federated
        if decl is not None and all(getattr(decl, k) == v for k, v in declared.items()):
            names.append(name)
    return names


def check_federated(settings: FederatedSettings | None, method: MethodChoice) -> None:
    """The method and the ``federated`` settings fit together (ValueError naming the key)."""
    decl = method.cls.federated
    if decl is None:
        raise ValueError(
            f"federated runs train with a federated method; method={method.name} is not one: choose one of "
            f"{', '.join(federated_methods())}"
        )
    if settings is None:
        raise ValueError(
            f"method={method.name} is a federated method: choose the clients and rounds with federated=<preset> "
            "(e.g. federated=fashion_mnist_10; presets in configs/federated/)"
        )
    if decl.public_data and settings.public_size <= 0:
        raise ValueError(
            f"method={method.name} learns from unlabelled public data, and federated.public_size=0 holds none out: "
            f"give federated.public_size > 0 (e.g. 5000), or a method without public data: "
            f"{', '.join(federated_methods(public_data=False))}"
        )
    if settings.client_models is not None and not decl.heterogeneous:
        raise ValueError(
            f"federated.client_models gives the clients different models, and method={method.name} shares "
            f"{decl.shares}, which needs one architecture: leave client_models=null (every client trains the "
            f"student), or choose a method for mixed architectures: {', '.join(federated_methods(heterogeneous=True))}"
        )
    if settings.engine == "flower" and importlib.util.find_spec("flwr") is None:
        raise ValueError(
            "federated.engine=flower needs Flower, which is not installed: pip install 'kdexp[flower]' "
            "(or use federated.engine=local, the default)"
        )
