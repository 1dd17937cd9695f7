"""The ranking task's own loop: data from the data config, rankers from the model configs, a
student trained by its method, evaluation by the protocol, and timing; what kdexp.tasks' ranking
declaration hands the run layer. Plain PyTorch: an epoch of MovieLens-100K is a second or two."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import torch
from torch import nn

from kdexp.optim import build_optimizer, build_scheduler
from kdexp.ranking.data import RANKING_DATA
from kdexp.ranking.metrics import full_ranking_metrics, hit_rate, ndcg_single, sampled_rank
from kdexp.ranking.models import Catalogue, attach_side_features, build_ranker, count_params, score_all
from kdexp.ranking.protocol import RankingData, split

log = logging.getLogger("kdexp")
PROTOCOL_KEYS = ("name", "positive_rating", "eval_negatives", "hr_k", "full_ks", "batch_size", "eval_batch_size", "root")
CANDIDATES = 100  # the NCF protocol's list: the held-out item and 99 negatives (latency is timed on it)


def load_data(cfg: dict[str, Any], seed: int) -> RankingData:
    """The data config's interactions split by its protocol (negatives drawn from ``seed``)."""
    name = cfg.get("name")
    if name not in RANKING_DATA:
        raise ValueError(f"data={name!r} is not a ranking data set; task=ranking takes data=<one of: {', '.join(RANKING_DATA.names())}>")
    options = {k: v for k, v in cfg.items() if k not in PROTOCOL_KEYS}
    raw = RANKING_DATA.get(name)(root=cfg.get("root"), **options)
    k = int(cfg.get("hr_k", 10))
    ks = tuple(int(x) for x in cfg.get("full_ks", (3, 5, 10)))
    n_neg = int(cfg.get("eval_negatives", 99))
    if max(k, *ks) > min(raw.n_items, n_neg + 1):
        raise ValueError(
            f"data.hr_k={k} / data.full_ks={list(ks)}: a cut-off K must not exceed the items ranked "
            f"({n_neg + 1} candidates, {raw.n_items} items); give smaller ones"
        )
    return split(raw, cfg.get("positive_rating"), n_neg, seed)


def catalogue(data: RankingData) -> Catalogue:
    return Catalogue(data.n_users, data.n_items, data.user_cards, data.item_genres.shape[1])


def build_model(role: str, cfg: dict[str, Any], data: RankingData) -> nn.Module:
    model = build_ranker(role, cfg, catalogue(data))
    attach_side_features(model, data.user_features, data.item_genres)
    return model


def batches(data: RankingData, batch_size: int, negatives: int, generator: torch.Generator):
    """One epoch: the training positives shuffled, each with ``negatives`` items drawn uniformly
    (a drawn positive stays: rare, and the usual practice)."""
    order = torch.randperm(len(data.train_users), generator=generator)
    for part in order.split(batch_size):
        negs = torch.randint(0, data.n_items, (len(part), negatives), generator=generator)
        yield data.train_users[part], torch.cat([data.train_items[part].unsqueeze(1), negs], dim=1)


@torch.no_grad()
def sampled_metrics(model: nn.Module, data: RankingData, split_name: str, k: int) -> dict[str, float]:
    """HR@k and NDCG@k of the held-out item against the fixed sampled negatives."""
    items = torch.cat([getattr(data, f"{split_name}_items").unsqueeze(1), getattr(data, f"{split_name}_negatives")], dim=1)
    was = model.training
    model.eval()
    scores = torch.cat([model(u, i) for u, i in zip(data.eval_users.split(256), items.split(256))])
    model.train(was)
    rank = sampled_rank(scores[:, 0], scores[:, 1:])
    return {f"hr_at_{k}": hit_rate(rank, k), f"ndcg_at_{k}": ndcg_single(rank, k)}


def evaluate(model: nn.Module, data: RankingData, split_name: str, k: int, ks: tuple[int, ...], full: bool) -> dict[str, float]:
    """The split's metrics: sampled HR/NDCG@k, and with ``full`` the full-ranking ones (training
    positives, and the validation item when testing, never ranked)."""
    out = sampled_metrics(model, data, split_name, k)
    if full:
        scores = score_all(model, data.n_users, data.n_items, data.eval_users)
        scores = scores.masked_fill(data.train_mask[data.eval_users], float("-inf"))
        target = getattr(data, f"{split_name}_items")
        if split_name == "test":
            scores[torch.arange(len(target)), data.val_items] = float("-inf")
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[torch.arange(len(target)), target] = True
        out.update(full_ranking_metrics(scores, relevant, ks))
    return out


def train(
    module: Any,
    params: list[nn.Parameter],
    data: RankingData,
    run: dict[str, Any],
    validate: Callable[[], dict[str, float]],
    on_epoch: Callable[[int, dict[str, float]], None],
    best_of: Callable[[], nn.Module],
    primary: str,
) -> dict[str, Any]:
    """``run['epochs']`` epochs of ``module.loss`` (a RankingMethod) with the run's optimizer and
    scheduler; validation after each; the best-validation epoch's weights kept (a copy of
    ``best_of()``). Returns history, best epoch and best state."""
    unique = list({id(p): p for p in params if p.requires_grad}.values())
    optimizer = build_optimizer(unique, run["optimizer"])
    n_batches = -(-len(data.train_users) // int(run["batch_size"]))
    schedule = build_scheduler(optimizer, run["scheduler"], max_epochs=int(run["epochs"]), total_steps=int(run["epochs"]) * n_batches)
    generator = torch.Generator().manual_seed(int(run["seed"]))
    history, best, best_epoch, best_state = [], float("-inf"), -1, None
    for epoch in range(int(run["epochs"])):
        started, sums = time.perf_counter(), {}
        module.start_epoch(epoch, int(run["epochs"]))
        for users, items in batches(data, int(run["batch_size"]), module.options.negatives, generator):
            loss, terms = module.loss(users, items)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {float(loss)} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule and schedule["interval"] == "step":
                schedule["scheduler"].step()
            for name, value in {"loss": loss, **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        if schedule and schedule["interval"] == "epoch":
            schedule["scheduler"].step()
        val = validate()
        record = {**{f"train/{k}": v / n_batches for k, v in sums.items()}, **{f"val/{k}": v for k, v in val.items()},
                  "epoch_s": time.perf_counter() - started}
        history.append(record)
        on_epoch(epoch, record)
        if val[primary] > best:
            best, best_epoch, best_state = val[primary], epoch, copy.deepcopy(best_of().state_dict())
    return {"history": history, "best_epoch": best_epoch, "best_state": best_state}


def time_call(fn: Callable[[], Any], threads: int, min_run_time: float) -> tuple[float, float]:
    """(median, IQR) seconds of ``fn()``, torch.utils.benchmark's blocked_autorange."""
    from torch.utils.benchmark import Timer

    fn()  # warm-up
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    return m.median, m.iqr


@torch.no_grad()
def profile(model: nn.Module, data: RankingData, cfg: dict[str, Any]) -> dict[str, Any]:
    """Size and speed, measured the same way for every model, in eval mode on the CPU: the time to
    score one user's 100 candidates (b=1) and a user's full item list, and per user in batches of
    ``throughput_batch`` users × 100 candidates (users/s)."""
    model = copy.deepcopy(model).cpu().eval()
    threads = int(cfg.get("threads") or torch.get_num_threads())
    min_time = float(cfg.get("min_run_time", 1.0))
    batch = int(cfg.get("throughput_batch", 256))
    g = torch.Generator().manual_seed(0)
    one_u, one_i = torch.zeros(1, dtype=torch.long), torch.randint(0, data.n_items, (1, CANDIDATES), generator=g)
    all_i = torch.arange(data.n_items).unsqueeze(0)
    many_u = torch.randint(0, data.n_users, (batch,), generator=g)
    many_i = torch.randint(0, data.n_items, (batch, CANDIDATES), generator=g)
    b1, iqr = time_call(lambda: model(one_u, one_i), threads, min_time)
    full, _ = time_call(lambda: model(one_u, all_i), threads, min_time)
    batched, _ = time_call(lambda: model(many_u, many_i), threads, min_time)
    params = count_params(model)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {
        "params": params,
        "size_mb": size / 1e6,
        "latency_ms_b1": b1 * 1e3,
        "latency_iqr_ms_b1": iqr * 1e3,
        "latency_ms_full_list": full * 1e3,
        "latency_ms_per_user_batched": batched * 1e3 / batch,
        "throughput_users_per_s": batch / batched,
        "threads": threads,
        "throughput_batch": batch,
        "device": "cpu",
    }
