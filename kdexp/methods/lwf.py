"""``lwf``: Learning without Forgetting (Li & Hoiem, ECCV 2016) in a class-incremental run."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from kdexp.methods.incremental_losses import lwf_distillation, new_class_ce
from kdexp.methods.class_incremental import IncrementalModule
from kdexp.methods.options import option, weight
from kdexp.methods.registry import register_method

CE_LOGITS = ("new", "all")


@register_method("lwf")
class LwFModule(IncrementalModule):
    """loss = ce_weight · CE(s[new], y) + lwf_weight · L_old(s[old], t; T).

    L_new: cross-entropy over the new classes' logits (``ce_logits=new``, the paper's new task
    head; ``all``: over every seen class). L_old: the previous model's softened outputs on the
    old classes (``kdexp.methods.incremental_losses.lwf_distillation``; both sides z-scored first with
    ``logit_standardization``). Paper defaults: T = 2, λ_o = lwf_weight = 1. No exemplars: only
    the new classes' images are seen.
    """

    @dataclass
    class Options(IncrementalModule.Options):
        lwf_weight: float = weight(1.0, search=(0.0, 2.0))
        ce_logits: str = option("new", "new: CE over the new classes' logits (the paper's new head); all: every seen class")
        distils_softmax = True

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.ce_logits not in CE_LOGITS:
                raise ValueError(f"method.ce_logits={self.ce_logits!r} is not one of {', '.join(CE_LOGITS)}")

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.teacher_logits(x) if self.teacher is not None else None
        logits = self.student(x)
        old = self.old_classes(teacher_logits)
        ce = new_class_ce(logits, y, old) if self.ce_logits == "new" else F.cross_entropy(logits, y)
        terms = {"ce": (self.ce_weight, ce)}
        if teacher_logits is not None:
            student_old = self.kd_logits(logits[:, :old])  # unchanged unless logit_standardization
            distil = lwf_distillation(student_old, self.kd_logits(teacher_logits), self.temperature)
            terms["lwf"] = (self.lwf_weight, distil)
        return logits, terms
