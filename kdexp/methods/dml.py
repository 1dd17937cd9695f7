"""``dml``: Deep Mutual Learning (Zhang et al. 2018) — a cohort of students teach each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from kdexp.losses import kd_loss, mutual_kl
from kdexp.methods.base import DistillationModule, accuracy_metrics, ensemble_probabilities
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import at_least, option, positive, weight
from kdexp.methods.registry import register_method
from kdexp.metric_names import accuracies, member_role, metric_name, metric_prefix
from kdexp.models import BuiltModel, build_model

COHORT_WHY = "registered model names, e.g. [resnet32,resnet32]; null = cohort_size copies of the student"


@register_method("dml")
class DMLModule(DistillationModule):
    """A cohort of N ≥ 2 students trained together, one summed loss and one backward:

        loss = Σ_i [ ce_weight · CE(s_i, y) + dml_weight · 1/(N-1) Σ_{j≠i} KL(p_j ‖ p_i)
                     + kd_weight · T² · KL(p_t^T ‖ p_i^T) ]

    with peers' predictions detached (Zhang et al. 2018, Eq. 3-5, weight 1, T=1). The teacher
    term is off by default (kd_weight=0); switching it on needs a teacher. The configured
    ``student`` is cohort member 0 unless ``cohort`` names the members (registered model names).
    """

    @dataclass
    class Options(DistillationModule.Options):
        cohort: list[str] | None = option(None, COHORT_WHY, min_items=2)
        cohort_size: int = at_least(2, 2, "a cohort learns from its peers")
        dml_weight: float = weight(1.0, search=(0.0, 2.0))
        dml_temperature: float = positive(1.0, "the softmax temperature divides the logits")

        def __post_init__(self) -> None:
            from kdexp.models import available_models

            unknown = [name for name in self.cohort or [] if name not in available_models()]
            if unknown:
                raise ValueError(
                    f"method.cohort names unknown model(s) {unknown}; registered models are: "
                    f"{', '.join(available_models())}"
                )

    teacher_use = TeacherUse(needed=False)
    members_field = "cohort"

    def __init__(self, student: BuiltModel, teacher: BuiltModel | None, **kwargs: Any) -> None:
        num_classes, channels = kwargs["num_classes"], kwargs["input_shape"][0]
        options = self.options_in(kwargs)

        def fresh(cfg: dict[str, Any], index: int) -> BuiltModel:
            # Each member gets its own initialisation: identical peers would stay identical.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed() + 1000 * index)
                return build_model(cfg, num_classes, channels, tuple(kwargs["input_shape"]))

        if options.cohort:
            members = [fresh({"name": n}, i) for i, n in enumerate(options.cohort)]
        else:
            student_cfg = student.cfg or {"name": student.name}
            members = [student] + [fresh(student_cfg, i) for i in range(1, options.cohort_size)]
        super().__init__(members[0], teacher, **kwargs)
        self.peers = nn.ModuleList(m.module for m in members[1:])
        self.member_infos = members
        roles = [member_role(i) for i in range(len(members))]
        self.val_members = nn.ModuleList(
            accuracy_metrics(num_classes).clone(prefix=metric_prefix("val", r)) for r in roles
        )
        self.val_ensemble = accuracy_metrics(num_classes).clone(prefix=metric_prefix("val", "ensemble"))
        self.test_members = nn.ModuleList(
            accuracy_metrics(num_classes).clone(prefix=metric_prefix("test", r)) for r in roles
        )
        self.test_ensemble = accuracy_metrics(num_classes).clone(prefix=metric_prefix("test", "ensemble"))

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
        ensemble.update(ensemble_probabilities(logits), y)
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
        if self.teacher is not None and self.evaluate_teacher:
            teacher_logits = self.teacher_forward(x)
            self.test_teacher.update(teacher_logits, y)
            self.log_dict(self.test_teacher)

    def report_models(self) -> dict[str, nn.Module]:
        models = {member_role(i): m for i, m in enumerate(self.members)}
        if self.teacher is not None:
            models["teacher"] = self.teacher
        return models


    def summarize(self, results: dict[str, Any], test_metrics: dict[str, float], last_val: dict[str, Any]) -> None:
        """The ensemble's test accuracy, and the member with the best last validation accuracy as
        the run's ``student`` (``run.best_student``; every member stays under its role)."""
        ensemble = accuracies(test_metrics, "test", "ensemble")
        if ensemble:
            results["ensemble"] = ensemble
        roles = [member_role(i) for i in range(len(self.members))]
        val = {role: float(last_val.get(metric_name("val", role), -1.0)) for role in roles}
        best = max(roles, key=val.__getitem__)
        results["run"]["best_student"] = best
        results["run"]["cohort"] = roles
        results["student"] = results[best]
