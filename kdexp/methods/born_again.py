"""``born_again``: Born-Again Networks (Furlanello et al. 2018), one generation's training.

Generation k+1 is a freshly initialised student distilled from generation k (generation 0 is the
teacher). The chain itself — one sub-run per generation, resumable, with the ensemble of all
student generations — is run by ``kdexp.runner.chain`` because the method declares
its ``chain`` and ``chain_links``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import Chain, TeacherUse
from kdexp.methods.options import at_least, positive, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("born_again")
class BornAgainModule(DistillationModule):
    """loss = kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)) + ce_weight · CE(s, y).

    Defaults follow the paper: the student matches its teacher's output distribution (T=1) with no
    label term (ce_weight=0); set ``method.ce_weight`` for the label-augmented variant.
    ``generations`` (N) is how many students the chain trains after the teacher.
    """

    @dataclass
    class Options(DistillationModule.Options):
        ce_weight: float = weight(0.0, search=(0.0, 1.0))
        kd_weight: float = weight(1.0, search=(0.0, 1.0))
        temperature: float = positive(1.0, "the softmax temperature T divides the logits", search=(1.0, 10.0))
        generations: int = at_least(3, 1, "students trained after the teacher")

    teacher_use = TeacherUse(logits_only=True)  # exact with cached teacher outputs (kdexp.teacher.outputs)
    # generation k in <run>/gen<k>/; the generations share one architecture: report their ensemble
    chain = Chain(step="generation", folder="gen", ensemble=True)
    members_field = "generations"

    @classmethod
    def chain_links(cls, options: Any) -> list[dict[str, Any] | None]:
        """``generations`` students of the run's own architecture."""
        return [None] * cls.options_from(options).generations

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        shared = {id(p) for p in student.module.parameters()} & {id(p) for p in teacher.module.parameters()}
        if student.module is teacher.module or shared:
            raise ValueError("born_again: the student shares parameters with the model teaching it")
        super().__init__(student, teacher, **kwargs)
