"""``pairwise``: the teacher's preference on every pair of items of a candidate list, as soft labels."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.methods.options import weight
from kdexp.ranking.losses import pairwise_loss
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


@register_ranking_method("pairwise")
class PairwiseRanking(RankingMethod):
    """loss = ce_weight · own(s) + kd_weight · mean_{a<b} BCE(σ((s_a - s_b)/T), σ((t_a - t_b)/T))."""

    @dataclass
    class Options(RankingMethod.Options):
        kd_weight: float = weight(1.0)

    def distill(self, users: Tensor, items: Tensor, scores: Tensor) -> Tensor:
        return pairwise_loss(scores, self.teacher_scores(users, items), self.options.temperature)
