"""``kd``: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""

from __future__ import annotations

from dataclasses import dataclass

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method


@register_method("kd")
class KDModule(DistillationModule):
    """loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)).

    Defaults T=4, ce_weight=0.1, kd_weight=0.9: the CIFAR-100 benchmark recipe (RepDistiller).
    """

    @dataclass
    class Options(DistillationModule.Options):
        ce_weight: float = weight(0.1, search=(0.0, 1.0))
        kd_weight: float = weight(0.9, search=(0.0, 1.0))

    teacher_use = TeacherUse(logits_only=True)  # exact with cached teacher outputs (kdexp.teacher.outputs)
