"""The engines a federated run can use (``federated.engine``), by name: ``local`` (clients one
after another in this process; resumable) and ``flower`` (kdexp.federated.flower: the same client
and server functions as a Flower ClientApp and ServerApp on Flower's deployment runtime)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdexp.federated.algorithms import Algorithm
from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.rounds import RoundsState, run_local
from kdexp.registry import Registry

Engine = Callable[[FederatedExperiment, Algorithm, "RoundsState | None", Callable[[RoundsState, dict[str, Any]], None], Path], RoundsState]
ENGINES: Registry[Engine] = Registry("federated engine", key="federated.engine")
RESUMABLE = ("local",)


@ENGINES.register("local")
def local_engine(exp, alg, start, after_round, run_dir):
    return run_local(exp, alg, start, after_round)


@ENGINES.register("flower")
def flower_engine(exp, alg, start, after_round, run_dir):
    from kdexp.federated.flower import run_flower  # the optional extra, imported only when chosen

    return run_flower(exp, start, after_round, run_dir)
