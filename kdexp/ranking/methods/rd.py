"""``rd``: Ranking Distillation (Tang & Wang, KDD 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdexp.methods.options import at_least, positive, weight
from kdexp.ranking.losses import discrepancy_weights, position_weights, rd_loss
from kdexp.ranking.methods.base import TopKDistillation, register_ranking_method
from kdexp.ranking.models import score_all


def check_top_k(key: str, k: int, data: Any) -> None:
    """``k`` of the teacher's items per user must exist beside the user's training positives."""
    room = int(data.n_items - data.train_mask.sum(1).max())
    if k > room:
        raise ValueError(
            f"method.{key}={k} is larger than the items a user can be recommended: {data.n_items} items, and a "
            f"user with {data.n_items - room} training positives leaves {room}; give method.{key} <= {room}"
        )


@register_ranking_method("rd")
class RankingDistillation(TopKDistillation):
    """The teacher's top-K items (training positives excluded) as extra positives of the student:

        loss = ce_weight · own(s) + kd_weight · (-Σ_r w_r log σ(s_{π_r})),  r = 1..K

    with w = the position weights w^a_r ∝ exp(-r/λ) during the warm-up and (w^a + w^b)/2 after it
    (the paper's hybrid weighting), w^b_r ∝ tanh(max(μ · (r̂_{π_r} - r), 0)) the rank discrepancy
    (r̂: the item's rank in the student's list, recomputed exactly at the start of every epoch
    after the warm-up; the paper estimates it from sampled items). Defaults from the authors'
    code (graytowne/rank_distill): K = 10, λ = 1, μ = 0.1, dynamic weights from epoch 10, α = 1."""

    @dataclass
    class Options(TopKDistillation.Options):
        kd_weight: float = weight(1.0)  # α: the distillation term
        topk: int = at_least(10, 1, "the teacher's top-K items per user")
        lam: float = positive(1.0, "λ: how fast the position weight exp(-r/λ) falls")
        mu: float = positive(0.1, "μ: the steepness of the rank-discrepancy weight")
        warm_up_epochs: int = at_least(10, 0, "epochs with position weights only, before the student's ranks count")

    @classmethod
    def check_models(cls, options: Any, student: Any, teacher: Any, data: Any) -> list[str]:
        check_top_k("topk", options.topk, data)
        return super().check_models(options, student, teacher, data)

    def start_epoch(self, epoch: int, max_epochs: int) -> None:
        super().start_epoch(epoch, max_epochs)
        self.student_rank = None
        if epoch >= self.options.warm_up_epochs and self.options.kd_weight > 0:
            top = self.teacher_top(self.options.topk)
            scores = score_all(self.student, self.data.n_users, self.n_items).masked_fill(self.data.train_mask, float("-inf"))
            own = torch.gather(scores, 1, top)
            self.student_rank = (scores.unsqueeze(1) > own.unsqueeze(2)).sum(2)  # (users, K): 0-based ranks

    def distill_top(self, users: Tensor, top: Tensor) -> Tensor:
        weights = position_weights(self.options.topk, self.options.lam).to(top.device).expand(len(users), -1)
        if self.student_rank is not None:
            dynamic = discrepancy_weights(self.student_rank[users.cpu()], self.options.mu).to(top.device)
            weights = (weights + dynamic) / 2
        return rd_loss(self.student(users, top), weights)
