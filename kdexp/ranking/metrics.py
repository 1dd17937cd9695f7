"""Ranking metrics, on scores: HR@k and NDCG@k of one held-out item against sampled negatives
(the NCF protocol), and full-ranking Precision@k, NDCG@k and MAP over a relevance matrix (RD's
protocol). Ties count against the held-out item (a model that scores everything alike earns
nothing)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sampled_rank(positive: Tensor, negatives: Tensor) -> Tensor:
    """The 0-based rank of each row's positive among its negatives: how many score at least as high."""
    return (negatives >= positive.unsqueeze(1)).sum(1)


def hit_rate(rank: Tensor, k: int) -> float:
    """HR@k: the share of users whose held-out item ranks in the top k."""
    return float((rank < k).float().mean())


def ndcg_single(rank: Tensor, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) when it ranks in the top k, else 0 (its
    ideal DCG is 1)."""
    gain = 1.0 / torch.log2(rank.double() + 2.0)
    return float(torch.where(rank < k, gain, torch.zeros_like(gain)).mean())


def sorted_relevance(scores: Tensor, relevant: Tensor) -> Tensor:
    """``relevant`` (users × items, bool) reordered by each row's scores, best first; among equal
    scores the irrelevant items come first."""
    return torch.gather(relevant, 1, _lexsort_desc(scores, relevant))


def _lexsort_desc(scores: Tensor, relevant: Tensor) -> Tensor:
    """Column order by score descending, then irrelevant before relevant (rows already by score)."""
    order = torch.argsort(relevant.to(torch.int8), dim=1, stable=True)  # irrelevant first
    order = torch.gather(order, 1, torch.argsort(torch.gather(scores, 1, order), dim=1, descending=True, stable=True))
    return order


def precision_at_k(ranked: Tensor, k: int) -> float:
    """P@k: the share of the top k that is relevant, averaged over users."""
    return float(ranked[:, :k].double().sum(1).div(k).mean())


def ndcg_at_k(ranked: Tensor, k: int) -> float:
    """NDCG@k = DCG@k / IDCG@k, DCG = sum over the top k of rel / log2(position + 2) (binary rel)."""
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)
    top = ranked[:, :k].double()
    dcg = (top * discount[: top.shape[1]]).sum(1)
    n_rel = ranked.sum(1).clamp(max=k)
    idcg = torch.stack([discount[: int(n)].sum() for n in n_rel])
    return float(torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros_like(dcg)).mean())


def average_precision(ranked: Tensor) -> float:
    """MAP: per user, the mean of P@position over the positions of its relevant items (the full
    list), averaged over users."""
    rel = ranked.double()
    hits = rel.cumsum(1)
    positions = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    n_rel = rel.sum(1)
    ap = (hits / positions * rel).sum(1) / n_rel.clamp(min=1)
    return float(ap.mean())


def full_ranking_metrics(scores: Tensor, relevant: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """``precision_at_<k>``, ``ndcg_full_at_<k>`` for each k, and ``map`` over the full item list
    (``scores``: users × items, already -inf where an item must not be ranked)."""
    ranked = sorted_relevance(scores, relevant)
    out: dict[str, float] = {}
    for k in ks:
        out[f"precision_at_{k}"] = precision_at_k(ranked, k)
        out[f"ndcg_full_at_{k}"] = ndcg_at_k(ranked, k)
    out["map"] = average_precision(ranked)
    return out


def log2_gain(position: int) -> float:
    """1 / log2(position + 2): the DCG discount at a 0-based position (for hand checks)."""
    return 1.0 / math.log2(position + 2)
