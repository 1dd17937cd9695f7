"""``pointwise``: score distillation item by item (MSE to the teacher's scores, or BCE to its
click probabilities) on each candidate list."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.methods.options import weight
from kdexp.ranking.losses import pointwise_loss
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


@register_ranking_method("pointwise")
class PointwiseRanking(RankingMethod):
    """loss = ce_weight · own(s) + kd_weight · pointwise(s, t) over the candidates and ``list_items``."""

    @dataclass
    class Options(RankingMethod.Options):
        kd_weight: float = weight(1.0)
        kind: str = "mse"  # mse: (s - t)^2 | bce: BCE(σ(s), σ(t))

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.kind not in ("mse", "bce"):
                raise ValueError(f"method.kind={self.kind!r} is unknown; choose one of: mse, bce")

    def distill(self, users: Tensor, items: Tensor, scores: Tensor) -> Tensor:
        return pointwise_loss(scores, self.teacher_scores(users, items), self.options.kind)
