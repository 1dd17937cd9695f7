"""``vanilla``: one model trained alone on cross-entropy (teachers, and the student baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import positive, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("vanilla")
class VanillaModule(DistillationModule):
    """loss = CE(student, labels). No teacher."""

    @dataclass
    class Options(DistillationModule.Options):
        # Alone on CE there is no teacher term to weigh: no search range (hparams_search=auto then
        # tunes the optimiser only; a CE weight would only rescale the learning rate).
        ce_weight: float = weight(1.0)
        kd_weight: float = weight(0.0)
        temperature: float = positive(4.0, "the softmax temperature T divides the logits")

    teacher_use = TeacherUse(needed=False)

    def __init__(self, student: BuiltModel, teacher: None = None, **kwargs: Any) -> None:
        super().__init__(student, None, **kwargs)
