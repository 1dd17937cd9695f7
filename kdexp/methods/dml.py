"""``dml``: Deep Mutual Learning (Zhang et al. 2018) — a cohort of students teach each other."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from kdexp.losses import kd_loss, mutual_kl
from kdexp.methods.base import DistillationModule, accuracy_metrics
from kdexp.models import BuiltModel, build_model


class DMLModule(DistillationModule):
    """A cohort of N ≥ 2 students trained together, one summed loss and one backward:

        loss = Σ_i [ ce_weight · CE(s_i, y) + dml_weight · 1/(N-1) Σ_{j≠i} KL(p_j ‖ p_i)
                     + kd_weight · T² · KL(p_t^T ‖ p_i^T) ]

    with peers' predictions detached (Zhang et al. 2018, Eq. 3-5, weight 1, T=1). The teacher
    term is off by default (kd_weight=0); switching it on needs a teacher. The configured
    ``student`` is cohort member 0 unless ``cohort`` names the members (registered model names).
    """

    needs_teacher = False

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel | None,
        cohort: list[str] | None = None,
        cohort_size: int = 2,
        ce_weight: float = 1.0,
        dml_weight: float = 1.0,
        dml_temperature: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        **kwargs: Any,
    ) -> None:
        num_classes, channels = kwargs["num_classes"], kwargs["input_shape"][0]

        def fresh(cfg: dict[str, Any], index: int) -> BuiltModel:
            # Each member gets its own initialisation: identical peers would stay identical.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1000 * index)
                return build_model(cfg, num_classes, channels)

        if cohort:
            members = [fresh({"name": n}, i) for i, n in enumerate(cohort)]
        else:
            student_cfg = student.cfg or {"name": student.name}
            members = [student] + [fresh(student_cfg, i) for i in range(1, cohort_size)]
        if len(members) < 2:
            raise ValueError(f"method.cohort needs at least 2 students, got {len(members)}")
        super().__init__(
            members[0],
            teacher,
            ce_weight=ce_weight,
            kd_weight=kd_weight,
            temperature=temperature,
            cohort=[m.name for m in members],
            dml_weight=dml_weight,
            dml_temperature=dml_temperature,
            **kwargs,
        )
        self.peers = nn.ModuleList(m.module for m in members[1:])
        self.member_infos = members
        self.dml_weight, self.dml_temperature = dml_weight, dml_temperature
        self.val_members = nn.ModuleList(
            accuracy_metrics(num_classes).clone(prefix=f"val/student{i}_") for i in range(len(members))
        )
        self.val_ensemble = accuracy_metrics(num_classes).clone(prefix="val/ensemble_")
        self.test_members = nn.ModuleList(
            accuracy_metrics(num_classes).clone(prefix=f"test/student{i}_") for i in range(len(members))
        )
        self.test_ensemble = accuracy_metrics(num_classes).clone(prefix="test/ensemble_")

    @classmethod
    def requires_teacher(cls, hparams: dict[str, Any]) -> bool:
        return float(hparams.get("kd_weight", 0.0)) > 0

    @property
    def members(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.teacher_forward(x) if self.teacher is not None else None
        logits = [member(x) for member in self.members]
        ce = sum(F.cross_entropy(z, y) for z in logits)
        soft = [self.kd_logits(z) for z in logits]  # z-scored with method.logit_standardization
        dml = sum(
            mutual_kl(z, [p for j, p in enumerate(soft) if j != i], self.dml_temperature)
            for i, z in enumerate(soft)
        )
        terms = {"ce": (self.ce_weight, ce), "dml": (self.dml_weight, dml)}
        if self.kd_weight > 0:
            kd = sum(kd_loss(z, self.kd_logits(teacher_logits), self.temperature) for z in soft)
            terms["kd"] = (self.kd_weight, kd)
        return logits[0], terms

    def _evaluate(
        self, x: Tensor, y: Tensor, members: nn.ModuleList, ensemble: MetricCollection
    ) -> Tensor:
        logits = [member(x) for member in self.members]
        for metrics, z in zip(members, logits):
            metrics.update(z, y)
            self.log_dict(metrics)
        mean_probs = torch.stack([z.softmax(1) for z in logits]).mean(0)
        ensemble.update(mean_probs, y)
        self.log_dict(ensemble)
        return logits[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self._evaluate(x, y, self.val_members, self.val_ensemble), y)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        first = self._evaluate(x, y, self.test_members, self.test_ensemble)
        self.test_student.update(first, y)
        self.log_dict(self.test_student)
        if self.teacher is not None:
            teacher_logits = self.teacher_forward(x)
            self.test_teacher.update(teacher_logits, y)
            self.log_dict(self.test_teacher)

    def report_models(self) -> dict[str, nn.Module]:
        models = {f"student{i}": m for i, m in enumerate(self.members)}
        if self.teacher is not None:
            models["teacher"] = self.teacher
        return models

