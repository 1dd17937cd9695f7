"""Optimizers and learning-rate schedules from small, validated config dicts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "multistep", "cosine", "onecycle")


def build_optimizer(params: Iterable[nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``cfg``: name (sgd | adam | adamw), lr, weight_decay, and for sgd momentum, nesterov."""
    name, lr, wd = cfg["name"], cfg["lr"], cfg.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=cfg.get("momentum", 0.9),
            nesterov=cfg.get("nesterov", False),
            weight_decay=wd,
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"optimizer.name={name!r} is unknown; choose one of: {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], max_epochs: int, total_steps: int
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict, or None.

    multistep: ×``gamma`` at epochs ``milestones``; cosine: anneal to 0 over ``max_epochs``;
    onecycle: one cycle up to the optimizer's lr and down, stepped every batch (``total_steps``).
    """
    name = cfg.get("name", "none")
    if name == "none":
        return None
    if name == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg["milestones"]), gamma=cfg.get("gamma", 0.1)
        )
        return {"scheduler": sched, "interval": "epoch"}
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(max_epochs, 1))
        return {"scheduler": sched, "interval": "epoch"}
    if name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=max(total_steps, 1),
            pct_start=cfg.get("pct_start", 0.3),
        )
        return {"scheduler": sched, "interval": "step"}
    raise ValueError(f"scheduler.name={name!r} is unknown; choose one of: {', '.join(SCHEDULERS)}")
