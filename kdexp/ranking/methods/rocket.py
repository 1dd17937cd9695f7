"""``rocket``: Rocket Launching (Zhou et al., AAAI 2018) for rankers: the teacher (booster) and the
student (light net) train together, optionally sharing the feature-embedding layer, the light
net's scores pulled to the booster's with the gradient blocked towards the booster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import at_least, weight
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


@register_ranking_method("rocket")
class RocketRanking(RankingMethod):
    """Per step, on each candidate list (the positive and its negatives):

        loss = ce_weight · own(l) + booster_ce_weight · own(z) + hint_weight · mean (l - sg(z))²

    l, z: light / booster scores; sg: the gradient block (``gradient_block=false`` lets the hint
    pull the booster too). ``shared_stages=1``: the light net uses the booster's embedding layer (a
    ranker's first stage; the paper's shared bottom), which then learns from both losses. The
    options and their defaults are the image method's (configs/method/rocket.yaml: weights 1)."""

    teacher_use: ClassVar[TeacherUse] = TeacherUse(needed=True, trained_with_student=True)

    @dataclass
    class Options(RankingMethod.Options):
        booster_ce_weight: float = weight(1.0)
        hint_weight: float = weight(1.0)
        shared_stages: int = at_least(0, 0, "1 = the light net uses the booster's embedding layer")
        gradient_block: bool = True

    @classmethod
    def check_models(cls, options: Any, student: Any, teacher: Any, data: Any) -> list[str]:
        if options.kd_weight > 0:
            raise ValueError("method=rocket has no KD term (its hint is the teacher signal): leave method.kd_weight=0")
        if options.shared_stages > 1:
            raise ValueError(
                f"method.shared_stages={options.shared_stages}: a ranker shares at most its first stage, the "
                "embedding layer (method.shared_stages=1), or nothing (0)"
            )
        if options.shared_stages == 1:
            s, t = student.embedding, teacher.embedding
            if (type(s), s.dim, s.side) != (type(t), t.dim, t.side):
                raise ValueError(
                    f"method.shared_stages=1 shares the booster's embedding layer, so both rankers need the same "
                    f"fields and width: the teacher embeds {t.fields} fields at dim {t.dim}, the student {s.fields} at "
                    f"dim {s.dim}; give student.dim={t.dim} (and a ranker with the same side features), or shared_stages=0"
                )
        return super().check_models(options, student, teacher, data)

    def __init__(self, options: Any, student: Any, teacher: Any, data: Any) -> None:
        super().__init__(options, student, teacher, data)
        if options.shared_stages == 1:
            student.embedding = teacher.embedding  # one module: its parameters learn from both nets

    def loss(self, users: Tensor, items: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        light, booster = self.student(users, items), self.teacher(users, items)
        own, booster_own = self.own_loss(light), self.own_loss(booster)
        target = booster.detach() if self.options.gradient_block else booster
        hint = F.mse_loss(light, target)
        total = self.options.ce_weight * own + self.options.booster_ce_weight * booster_own + self.options.hint_weight * hint
        return total, {"own": own, "booster": booster_own, "hint": hint}
