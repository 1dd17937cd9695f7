"""Optimizers and learning-rate schedules, registered by name, built from config dicts.

Each entry's signature is the list of options its config may hold: ``optimizer=sgd
+optimizer.betas=[0.9,0.99]`` is an error naming the key and SGD's options, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from kdexp.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer", internal=("params",))
SCHEDULERS: Registry = Registry("scheduler", internal=("optimizer", "max_epochs", "total_steps"))
# Optimizer keys read by the run layer (linear LR scaling), not by torch.
LR_SCALING_KEYS = ("scale_lr_with_world_size", "reference_batch_size")


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable[nn.Parameter],
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum; weight decay as an L2 term in the gradient."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _adam_family(cls: type[torch.optim.Optimizer], doc: str):
    def build(
        params: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> torch.optim.Optimizer:
        return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)

    build.__doc__ = doc
    return build


OPTIMIZERS.register("adam")(_adam_family(torch.optim.Adam, "Adam (Kingma & Ba 2015), the paper's betas and eps."))
OPTIMIZERS.register("adamw")(_adam_family(torch.optim.AdamW, "AdamW (Loshchilov & Hutter 2019): decoupled weight decay."))


def build_optimizer(params: Iterable[nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer ``cfg['name']`` names, with the rest of ``cfg`` as its options."""
    return OPTIMIZERS.build(cfg, own=LR_SCALING_KEYS, params=params)


@SCHEDULERS.register("none")
def constant(optimizer: torch.optim.Optimizer, max_epochs: int, total_steps: int) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.register("multistep")
def multistep(
    optimizer: torch.optim.Optimizer,
    max_epochs: int,
    total_steps: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> dict[str, Any]:
    """lr × ``gamma`` at each epoch in ``milestones``."""
    sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return {"scheduler": sched, "interval": "epoch"}


@SCHEDULERS.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, max_epochs: int, total_steps: int) -> dict[str, Any]:
    """Cosine annealing to 0 over ``max_epochs``."""
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(max_epochs, 1))
    return {"scheduler": sched, "interval": "epoch"}


@SCHEDULERS.register("onecycle")
def onecycle(
    optimizer: torch.optim.Optimizer, max_epochs: int, total_steps: int, pct_start: float = 0.3
) -> dict[str, Any]:
    """One cycle up to the optimizer's lr over ``pct_start`` of the steps and down, every batch."""
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=max(total_steps, 1),
        pct_start=pct_start,
    )
    return {"scheduler": sched, "interval": "step"}


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], max_epochs: int, total_steps: int
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict, or None for ``none``."""
    cfg = {"name": "none", **cfg}
    return SCHEDULERS.build(cfg, optimizer=optimizer, max_epochs=max_epochs, total_steps=total_steps)
