"""The plain torch loops a client or the server trains with.

A client's local training calls its method module's own ``training_losses`` (the loss every kdexp
run of that method uses), with the run's optimizer and scheduler configs, in a loop without a
Lightning Trainer: a Trainer per client and round cost 65 ms of overhead per fit for 5 batches of
cnn_tiny here (0.18 s vs 0.115 s), about 5 minutes over a 24-run table of 200 client fits each.
Every loop draws its order from its own seeded generator, so a client's round is the same in
any process (the local engine, a Flower SuperNode) and after a resume.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from kdexp.callbacks import NonFiniteLossError
from kdexp.optim import build_optimizer, build_scheduler

EVAL_BATCH = 1000


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One epoch's shuffled index batches; a last batch of one image is dropped (BatchNorm cannot
    train on one)."""
    order = torch.randperm(n, generator=generator)
    parts = list(order.split(batch_size))
    return parts[:-1] if len(parts) > 1 and len(parts[-1]) == 1 else parts


def epoch_batches(n: int, batch_size: int, epochs: float, generator: torch.Generator) -> Iterator[list[Tensor]]:
    """The index batches of ``epochs`` passes over ``n`` images, one list per (shuffled) epoch; a
    fractional ``epochs`` (0.2) ends with that part of one more epoch's batches (rounded, at least one)."""
    steps = epoch_steps(n, batch_size, epochs)
    while steps > 0:
        part = batches(n, batch_size, generator)[:steps]
        steps -= len(part)
        yield part


def train_epochs(
    module: nn.Module, x: Tensor, y: Tensor, epochs: float, batch_size: int,
    optimizer_cfg: dict, scheduler_cfg: dict, seed: int,
) -> float:
    """Train ``module.student`` for ``epochs`` (a fraction: that part of an epoch's batches) on
    (x, y) with the module's own loss (``training_losses``: name → (weight, term)); returns the
    mean loss of the last epoch."""
    student = module.student
    student.train()
    optimizer = build_optimizer([p for p in student.parameters() if p.requires_grad], optimizer_cfg)
    generator = torch.Generator().manual_seed(seed)
    total_steps = epoch_steps(len(x), batch_size, epochs)
    schedule = build_scheduler(optimizer, scheduler_cfg, max_epochs=max(math.ceil(epochs), 1), total_steps=max(total_steps, 1))
    scheduler, interval = (schedule["scheduler"], schedule.get("interval", "epoch")) if schedule else (None, None)
    mean = math.nan
    for epoch in epoch_batches(len(x), batch_size, epochs, generator):
        total, count = 0.0, 0
        for index in epoch:
            _, terms = module.training_losses(x[index], y[index])
            loss = functools.reduce(operator.add, [w * v for w, v in terms.values()])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"a client's local loss became {float(loss)}; lower optimizer.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and interval == "step":
                scheduler.step()
            total, count = total + float(loss.detach()), count + 1
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        mean = total / max(count, 1)
    return mean


def fit_logits(
    model: nn.Module, x: Tensor, targets: Tensor, loss: Callable[[Tensor, Tensor], Tensor],
    steps: int, batch_size: int, lr: float, seed: int,
) -> None:
    """Train ``model`` for ``steps`` Adam steps so its logits on ``x`` follow ``targets`` (the
    server's distillation in FedDF, a client's digest in FedMD): random batches, ``loss(z, t)``."""
    if steps <= 0 or len(x) == 0:
        return
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    queue: list[Tensor] = []
    for _ in range(steps):
        if not queue:
            queue = batches(len(x), batch_size, generator)
        index = queue.pop(0)
        value = loss(model(x[index]), targets[index])
        if not torch.isfinite(value):
            raise NonFiniteLossError(f"a distillation loss became {float(value)}; lower its learning rate")
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()


def epoch_steps(n: int, batch_size: int, epochs: float) -> int:
    """Steps of ``epochs`` passes over ``n`` images in batches of ``batch_size`` (a fraction of
    an epoch: that part of its batches, rounded, at least one)."""
    per_epoch = math.ceil(n / batch_size)
    if per_epoch > 1 and n - (per_epoch - 1) * batch_size == 1:
        per_epoch -= 1  # batches() drops a last batch of one image
    return max(round(epochs * per_epoch), 1) if epochs > 0 and n > 0 else 0


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    return torch.cat([model(part) for part in x.split(EVAL_BATCH)]) if len(x) else torch.empty(0)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy (0-1) of ``model`` on (x, y)."""
    return float((logits_of(model, x).argmax(1) == y).float().mean()) if len(x) else math.nan
