"""``vanilla``: one model trained alone on cross-entropy (teachers, and the student baseline)."""

from __future__ import annotations

from typing import Any

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("vanilla")
class VanillaModule(DistillationModule):
    """loss = CE(student, labels). No teacher."""

    teacher_use = TeacherUse(needed=False)

    def __init__(self, student: BuiltModel, teacher: None = None, **kwargs: Any) -> None:
        super().__init__(student, None, **kwargs)
