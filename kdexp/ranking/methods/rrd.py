"""``rrd``: relaxed ranking distillation (Kang et al., DE-RRD, CIKM 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdexp.methods.options import at_least, weight
from kdexp.ranking.losses import rrd_loss
from kdexp.ranking.methods.base import TopKDistillation, register_ranking_method
from kdexp.ranking.methods.rd import check_top_k


@register_ranking_method("rrd")
class RelaxedRankingDistillation(TopKDistillation):
    """The student keeps the teacher's order of its K interesting items (its top-K, training
    positives excluded), above L items drawn uniformly from all items (a rare top-K item among them
    is left in), whose order is left free:

        loss = ce_weight · own(s) + kd_weight · -log P_PL(π_1 > ... > π_K > {rest})

    (:func:`kdexp.ranking.losses.rrd_loss`). The paper draws the K interesting items from the
    teacher's top-N by a rank-aware distribution; here they are the top-K themselves (a simpler,
    deterministic choice). K = 10 and L = 40 are kdexp's choices for MovieLens-100K, not the paper's."""

    @dataclass
    class Options(TopKDistillation.Options):
        kd_weight: float = weight(1.0)
        topk: int = at_least(10, 1, "the K interesting items: the teacher's top-K per user")
        uninteresting: int = at_least(40, 1, "L: items sampled from outside the top-K per user and step")

    @classmethod
    def check_models(cls, options: Any, student: Any, teacher: Any, data: Any) -> list[str]:
        check_top_k("topk", options.topk, data)
        return super().check_models(options, student, teacher, data)

    def distill_top(self, users: Tensor, top: Tensor) -> Tensor:
        rest = torch.randint(0, self.n_items, (len(users), self.options.uninteresting), device=users.device)
        both = self.student(users, torch.cat([top, rest], dim=1))
        return rrd_loss(both[:, : self.options.topk], both[:, self.options.topk:])
