"""The shared base of the class-incremental methods, and the two bounds: ``finetune``, ``joint``.

An incremental run (``kdexp.incremental``) trains one module per step. Step k's student is step
k−1's model with a head grown to every class seen so far; its teacher is a frozen copy of step
k−1's model (none at step 1), whose logits cover the old classes. Labels are positions in the
class order, old classes first, so the old classes' logits are ``student_logits[:, :C_old]``.
The run itself is declared by ``chain``'s runner (kdexp.runner.experiment dispatches on it, never on a name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import Chain, TeacherUse
from kdexp.methods.options import positive, switched_off
from kdexp.methods.registry import register_method


class IncrementalModule(DistillationModule):
    """One step of a class-incremental run; the subclass says how the step learns."""

    @dataclass
    class Options(DistillationModule.Options):
        kd_weight: float = switched_off("class-incremental methods distil through their own terms, e.g. lwf_weight; keep 0")
        temperature: float = positive(2.0, "the softmax temperature T of LwF's distillation term; unused by the others")
        # Whether the method has a distillation softmax that logit_standardization could apply to.
        distils_softmax: ClassVar[bool] = False

        def __post_init__(self) -> None:
            if self.logit_standardization and not self.distils_softmax:
                raise ValueError(
                    "method.logit_standardization=true needs a softmax distillation term (lwf has one); "
                    "this class-incremental method has none"
                )

    teacher_use = TeacherUse(needed=False)  # the teacher is the previous step's model, given by the run, not cfg.teacher
    chain = Chain(runner="incremental_steps")  # kdexp.runner.kinds; only runs under an ``incremental`` config
    uses_memory: ClassVar[bool] = False  # True: the step's data includes the exemplar memory (iCaRL)
    trains_on_seen: ClassVar[bool] = False  # True: the step's data is every class seen so far (joint)

    def old_classes(self, teacher_logits: Tensor | None) -> int:
        return 0 if teacher_logits is None else teacher_logits.shape[1]

    def report_models(self) -> dict[str, nn.Module]:
        """Only the step's model: the teacher is the previous step's, reported there."""
        return {"student": self.student}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_student.update(self.student(x), y)
        self.log_dict(self.test_student)


@register_method("finetune")
class FinetuneModule(IncrementalModule):
    """loss = CE(s, y) over every class seen so far, on the new classes' data only: nothing
    protects the old classes (the lower bound)."""

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        logits = self.student(x)
        return logits, {"ce": (self.ce_weight, F.cross_entropy(logits, y))}


@register_method("joint")
class JointModule(FinetuneModule):
    """loss = CE(s, y) over every class seen so far, on the data of every class seen so far
    (the upper bound: nothing is forgotten because nothing is withheld)."""

    trains_on_seen = True
