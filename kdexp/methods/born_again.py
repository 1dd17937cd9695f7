"""``born_again``: Born-Again Networks (Furlanello et al. 2018), one generation's training.

Generation k+1 is a freshly initialised student distilled from generation k (generation 0 is the
teacher). The chain itself — one sub-run per generation, resumable, with the ensemble of all
student generations — is run by ``kdexp.chain``.
"""

from __future__ import annotations

from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.models import BuiltModel


class BornAgainModule(DistillationModule):
    """loss = kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)) + ce_weight · CE(s, y).

    Defaults follow the paper: the student matches its teacher's output distribution (T=1) with no
    label term (ce_weight=0); set ``method.ce_weight`` for the label-augmented variant.
    ``generations`` (N) is how many students the chain trains after the teacher.
    """

    needs_teacher = True
    teacher_logits_only = True  # exact with cached teacher outputs (kdexp.teacher_outputs)
    chain_runner = True
    chain_ensemble = True  # the generations share one architecture: report their ensemble

    @classmethod
    def chain_links(cls, hparams: dict[str, Any]) -> list[dict[str, Any] | None]:
        """``generations`` students of the run's own architecture."""
        return [None] * int(hparams.get("generations", 3))

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        generations: int = 3,
        ce_weight: float = 0.0,
        kd_weight: float = 1.0,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if generations < 1:
            raise ValueError(f"method.generations must be >= 1, got {generations}")
        shared = {id(p) for p in student.module.parameters()} & {id(p) for p in teacher.module.parameters()}
        if student.module is teacher.module or shared:
            raise ValueError("born_again: the student shares parameters with the model teaching it")
        super().__init__(
            student,
            teacher,
            ce_weight=ce_weight,
            kd_weight=kd_weight,
            temperature=temperature,
            generations=generations,
            **kwargs,
        )
        self.generations = generations
