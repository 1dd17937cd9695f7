"""``listwise``: softmax KL between the teacher's and the student's scores over a candidate list
(Hinton's KD with the list as the classes)."""

from __future__ import annotations

from dataclasses import dataclass

from kdexp.methods.options import weight
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


@register_ranking_method("listwise")
class ListwiseRanking(RankingMethod):
    """loss = ce_weight · own(s) + kd_weight · T² · KL(softmax(t/T) || softmax(s/T)) over each list
    (the candidates and ``list_items`` sampled items; the base class's distillation term)."""

    @dataclass
    class Options(RankingMethod.Options):
        kd_weight: float = weight(1.0)
