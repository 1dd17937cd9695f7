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

The trainer network is ``trainer_model`` (a registered model name), freshly initialised; it is
reported as the run's ``teacher`` (its test accuracy and agreement are measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from kdexp.losses import kd_loss
from kdexp.methods.base import DistillationModule, accuracy_metrics
from kdexp.methods.options import option, positive, weight
from kdexp.methods.registry import register_method
from kdexp.metric_names import metric_prefix
from kdexp.models import BuiltModel, available_models, build_model


class JointModule(DistillationModule):
    """Teacher (``trainer_model``) and student trained together; see the module docstring."""

    @dataclass
    class Options(DistillationModule.Options):
        trainer_model: str = option("cnn_large", "a registered model name: the trainable teacher, from scratch")
        trainer_weight: float = weight(1.0, search=(0.0, 2.0))
        ce_weight: float = weight(0.5, search=(0.0, 1.0))
        kd_weight: float = weight(0.5, search=(0.0, 1.0))
        temperature: float = positive(1.0, "the softmax temperature T divides the logits", search=(1.0, 10.0))

        def __post_init__(self) -> None:
            if self.trainer_model not in available_models():
                raise ValueError(
                    f"method.trainer_model={self.trainer_model!r} is not a registered model; registered models are: "
                    f"{', '.join(available_models())}"
                )

    needs_teacher = False
    trains_own_teacher = True  # kd_weight > 0 distils from the jointly trained network, not a given teacher

    def __init__(self, student: BuiltModel, teacher: BuiltModel | None, **kwargs: Any) -> None:
        num_classes, input_shape = kwargs["num_classes"], tuple(kwargs["input_shape"])
        options = self.options_from(kwargs)
        trainer = build_model({"name": options.trainer_model}, num_classes, input_shape[0], input_shape)
        super().__init__(student, None, **kwargs)
        self.trainer_net = trainer.module  # a registered child: trained, checkpointed, on the device
        self.teacher_info = trainer
        self.test_teacher = accuracy_metrics(num_classes).clone(prefix=metric_prefix("test", "teacher"))
        self.test_agreement = MeanMetric()
        self.val_teacher = accuracy_metrics(num_classes).clone(prefix=metric_prefix("val", "teacher"))

    @classmethod
    def requires_teacher(cls, hparams: dict[str, Any]) -> bool:
        return False  # it trains its own

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
