"""``kd``: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.models import BuiltModel


class KDModule(DistillationModule):
    """loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)).

    Defaults T=4, ce_weight=0.1, kd_weight=0.9: the CIFAR-100 benchmark recipe (RepDistiller).
    """

    needs_teacher = True
    teacher_logits_only = True  # exact with cached teacher outputs (kdexp.teacher_outputs)

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        temperature: float = 4.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            student, teacher, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature, **kwargs
        )
