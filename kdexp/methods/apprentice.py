"""Apprentice (Mishra & Marr 2018) scheme C: the student first trains at full precision, then is
quantised and fine-tuned, with the frozen teacher's distillation term throughout:

    loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T))

Epochs ``0 .. fp_epochs-1`` run with the student's fake quantisation switched off (a
full-precision student; its observers keep tracking value ranges, so quantisation starts
calibrated); from epoch ``fp_epochs`` on it is on (quantisation-aware fine-tuning). Defaults: the paper's β=0.5, γ=0.5, T=1. Scheme A is ``apprentice_joint``
(kdexp.methods.joint); scheme B is ``kd`` with a quantised student (configs/method/apprentice_kd.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdexp.methods.kd import KDModule
from kdexp.methods.options import at_least, positive, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("apprentice_finetune")
class ApprenticeFinetuneModule(KDModule):
    """kd whose quantised student trains at full precision for ``fp_epochs``, then quantised."""

    @dataclass
    class Options(KDModule.Options):
        fp_epochs: int = at_least(1, 0, "full-precision epochs first, then quantised fine-tuning")
        ce_weight: float = weight(0.5, search=(0.0, 1.0))  # β
        kd_weight: float = weight(0.5, search=(0.0, 1.0))  # γ
        temperature: float = positive(1.0, "the softmax temperature T divides the logits", search=(1.0, 10.0))

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, options: Any) -> None:
        if not hasattr(student.module, "set_quantization"):
            raise ValueError(
                "method=apprentice_finetune (Apprentice scheme C) quantises the student after "
                f"method.fp_epochs full-precision epochs: give the student bit-widths, e.g. "
                f"+student.quantize.weight_bits=4 +student.quantize.activation_bits=8 (student {student.name!r} has none)"
            )

    @classmethod
    def route_epochs(cls, options: Any, teacher_cfg: dict[str, Any], student_epochs: int) -> None:
        """No route (the converged teacher only); called with the student's epochs before any teacher
        work, so a schedule that never quantises is refused here: the run would report a
        full-precision student as the quantised one."""
        fp_epochs = cls.options_from(options).fp_epochs
        if student_epochs and fp_epochs >= student_epochs:
            raise ValueError(
                f"method.fp_epochs={fp_epochs} >= trainer.max_epochs={student_epochs}: method=apprentice_finetune "
                "(Apprentice scheme C) would never train the student quantised, yet test and report it quantised; "
                f"choose method.fp_epochs below {student_epochs} (or more trainer.max_epochs)"
            )
        return None

    def on_train_epoch_start(self) -> None:
        self.student.set_quantization(self.current_epoch >= self.fp_epochs)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.trainer.state.fn == "fit":  # validate the student as it is this epoch
            self.student.set_quantization(self.current_epoch >= self.fp_epochs)

    def on_test_start(self) -> None:
        super().on_test_start()
        self.student.set_quantization(True)  # tested and reported as the quantised model
