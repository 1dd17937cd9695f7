"""``vanilla``: the student ranker alone, on its own loss (BPR or BCE with sampled negatives)."""

from __future__ import annotations

from typing import ClassVar

from kdexp.methods.declarations import TeacherUse
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


@register_ranking_method("vanilla")
class VanillaRanking(RankingMethod):
    """loss = ce_weight · own(s): no teacher."""

    teacher_use: ClassVar[TeacherUse] = TeacherUse(needed=False)

    @classmethod
    def requires_teacher(cls, options) -> bool:
        return False

    @classmethod
    def check_models(cls, options, student, teacher, data) -> list[str]:
        if options.kd_weight > 0:
            raise ValueError(
                f"method=vanilla trains the student alone, so method.kd_weight={options.kd_weight:g} has no teacher to "
                "distil; use method=listwise (or pointwise, pairwise, rd, rrd) for a distillation term"
            )
        return super().check_models(options, student, teacher, data)
