"""``lwf``: Learning without Forgetting (Li & Hoiem, ECCV 2016) in a class-incremental run."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from kdexp.incremental.losses import lwf_distillation, new_class_ce
from kdexp.methods.class_incremental import IncrementalModule
from kdexp.models import BuiltModel

CE_LOGITS = ("new", "all")


class LwFModule(IncrementalModule):
    """loss = ce_weight · CE(s[new], y) + lwf_weight · L_old(s[old], t; T).

    L_new: cross-entropy over the new classes' logits (``ce_logits=new``, the paper's new task
    head; ``all``: over every seen class). L_old: the previous model's softened outputs on the
    old classes (``kdexp.incremental.losses.lwf_distillation``). Paper defaults: T = 2,
    λ_o = lwf_weight = 1. No exemplars: only the new classes' images are seen.
    """

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel | None,
        ce_weight: float = 1.0,
        lwf_weight: float = 1.0,
        temperature: float = 2.0,
        ce_logits: str = "new",
        **kwargs: Any,
    ) -> None:
        if ce_logits not in CE_LOGITS:
            raise ValueError(f"method.ce_logits={ce_logits!r} is not one of {', '.join(CE_LOGITS)}")
        super().__init__(
            student, teacher, ce_weight=ce_weight, lwf_weight=lwf_weight, temperature=temperature,
            ce_logits=ce_logits, **kwargs,
        )
        self.lwf_weight, self.ce_logits = lwf_weight, ce_logits

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.teacher_logits(x) if self.teacher is not None else None
        logits = self.student(x)
        old = self.old_classes(teacher_logits)
        ce = new_class_ce(logits, y, old) if self.ce_logits == "new" else F.cross_entropy(logits, y)
        terms = {"ce": (self.ce_weight, ce)}
        if teacher_logits is not None:
            terms["lwf"] = (self.lwf_weight, lwf_distillation(logits, teacher_logits, self.temperature))
        return logits, terms
