"""The shared base of the class-incremental methods, and the two bounds: ``finetune``, ``joint``.

An incremental run (``kdexp.incremental``) trains one module per step. Step k's student is step
k−1's model with a head grown to every class seen so far; its teacher is a frozen copy of step
k−1's model (none at step 1), whose logits cover the old classes. Labels are positions in the
class order, old classes first, so the old classes' logits are ``student_logits[:, :C_old]``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.methods.base import DistillationModule
from kdexp.models import BuiltModel


class IncrementalModule(DistillationModule):
    """One step of a class-incremental run; the subclass says how the step learns."""

    needs_teacher = False  # the teacher is the previous step's model, given by the run, not cfg.teacher
    incremental = True  # only runs under an ``incremental`` config (kdexp.incremental.run)
    uses_memory = False  # True: the step's data includes the exemplar memory (iCaRL)
    trains_on_seen = False  # True: the step's data is every class seen so far (joint)

    def __init__(self, student: BuiltModel, teacher: BuiltModel | None, **kwargs: Any) -> None:
        kwargs.setdefault("kd_weight", 0.0)  # distillation terms are the subclass's own
        super().__init__(student, teacher, **kwargs)

    def old_classes(self, teacher_logits: Tensor | None) -> int:
        return 0 if teacher_logits is None else teacher_logits.shape[1]

    def report_models(self) -> dict[str, nn.Module]:
        """Only the step's model: the teacher is the previous step's, reported there."""
        return {"student": self.student}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_student.update(self.student(x), y)
        self.log_dict(self.test_student)


class FinetuneModule(IncrementalModule):
    """loss = CE(s, y) over every class seen so far, on the new classes' data only: nothing
    protects the old classes (the lower bound)."""

    def __init__(self, student: BuiltModel, teacher: BuiltModel | None, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        logits = self.student(x)
        return logits, {"ce": (self.ce_weight, F.cross_entropy(logits, y))}


class JointModule(FinetuneModule):
    """loss = CE(s, y) over every class seen so far, on the data of every class seen so far
    (the upper bound: nothing is forgotten because nothing is withheld)."""

    trains_on_seen = True
