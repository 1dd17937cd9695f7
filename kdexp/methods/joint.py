"""Joint training of a trainable "teacher" network and the student from scratch, one summed loss:

    loss = trainer_weight · CE(t, y) + ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T))

with the teacher's logits t detached in the distillation term (the teacher learns from the labels
only; the student learns from both). Two published recipes use it:

* ``apprentice_joint`` — Apprentice scheme A (Mishra & Marr 2018): a full-precision teacher and a
  low-precision student trained together; the paper's α=1, β=0.5, γ=0.5 and T=1 are the defaults
  (trainer_weight, ce_weight, kd_weight, temperature).
* ``projection_joint`` — ProjectionNet (Ravi 2017): a trainer network and the projection network
  trained together: λ1·trainer CE + λ2·projection-net CE + λ3·distillation. The paper leaves the λs
  as hyper-parameters without published values; the defaults are 1, 1, 1 at T=1.

The trainer network is the run's teacher, ``teacher=<model>``: trainable
(``teacher_use.trained_with_student``, as rocket's booster), freshly initialised (or from
``teacher.checkpoint``), never cached or frozen; it is reported as the run's ``teacher`` (its test
accuracy and agreement are measured) and saved as ``teacher.pt`` with its model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.losses import kd_loss
from kdexp.methods.base import DistillationModule, accuracy_metrics
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import positive, weight
from kdexp.methods.registry import register_method
from kdexp.metric_names import metric_prefix
from kdexp.models import BuiltModel


class JointModule(DistillationModule):
    """Teacher (``teacher=``, trainable) and student trained together; see the module docstring."""

    @dataclass
    class Options(DistillationModule.Options):
        trainer_weight: float = weight(1.0, search=(0.0, 2.0))
        ce_weight: float = weight(0.5, search=(0.0, 1.0))
        kd_weight: float = weight(0.5, search=(0.0, 1.0))
        temperature: float = positive(1.0, "the softmax temperature T divides the logits", search=(1.0, 10.0))

    # the run layer builds teacher= fresh and trainable, saves it as teacher.pt; kd_weight > 0
    # distils from the jointly trained network
    teacher_use = TeacherUse(trained_with_student=True)

    def __init__(self, student: BuiltModel, teacher: BuiltModel | None, **kwargs: Any) -> None:
        if teacher is None:
            raise ValueError(
                f"method={self.method_name} trains its teacher (the trainer network) together with the "
                "student: set teacher=<model name> (e.g. teacher=cnn_large)"
            )
        super().__init__(student, teacher, **kwargs)
        # A registered child: trained, checkpointed, on the device; not the base's frozen box.
        self._teacher_box = []
        self.trainer_net = teacher.module.train().requires_grad_(True)
        self.val_teacher = accuracy_metrics(kwargs["num_classes"]).clone(prefix=metric_prefix("val", "teacher"))

    @property
    def teacher(self) -> nn.Module | None:  # the base's test_step measures it as the teacher
        return self.trainer_net if "trainer_net" in self._modules else None

    def _place_teacher(self) -> None:
        pass  # a registered child: Lightning places it, and it trains

    def train(self, mode: bool = True) -> JointModule:
        pl.LightningModule.train(self, mode)  # the base would keep the teacher in eval mode
        return self

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.trainer_net(x)
        logits = self.student(x)
        terms = {
            "trainer_ce": (self.trainer_weight, F.cross_entropy(teacher_logits, y)),
            "ce": (self.ce_weight, F.cross_entropy(logits, y)),
            "kd": (self.kd_weight, kd_loss(self.kd_logits(logits), self.kd_logits(teacher_logits), self.temperature)),
        }
        terms.update(self.extra_losses(x, y, logits, teacher_logits))
        return logits, terms

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x, y = batch
        self.val_teacher.update(self.trainer_net(x), y)
        self.log_dict(self.val_teacher)

    def report_models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.trainer_net}


@register_method("apprentice_joint")
class ApprenticeJointModule(JointModule):
    """Apprentice scheme A: α=1 · CE(teacher) + β=0.5 · CE(student) + γ=0.5 · KD at T=1."""


@register_method("projection_joint")
class ProjectionJointModule(JointModule):
    """ProjectionNet joint training: λ1 · CE(trainer) + λ2 · CE(projection net) + λ3 · KD, all 1, T=1."""

    @dataclass
    class Options(JointModule.Options):
        ce_weight: float = weight(1.0, search=(0.0, 2.0))  # λ2
        kd_weight: float = weight(1.0, search=(0.0, 2.0))  # λ3
