"""Apprentice (Mishra & Marr 2018) scheme C: the student first trains at full precision, then is
quantised and fine-tuned, with the frozen teacher's distillation term throughout:

    loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T))

Epochs ``0 .. fp_epochs-1`` run with the student's fake quantisation switched off (a
full-precision student; its observers keep tracking value ranges, so quantisation starts
calibrated); from epoch ``fp_epochs`` on it is on (quantisation-aware fine-tuning). Defaults: the paper's β=0.5, γ=0.5, T=1. Scheme A is ``apprentice_joint``
(kdexp.methods.joint); scheme B is ``kd`` with a quantised student (configs/method/apprentice_kd.yaml).
"""

from __future__ import annotations

from typing import Any

from kdexp.methods.kd import KDModule
from kdexp.models import BuiltModel


class ApprenticeFinetuneModule(KDModule):
    """kd whose quantised student trains at full precision for ``fp_epochs``, then quantised."""

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        fp_epochs: int = 1,
        ce_weight: float = 0.5,
        kd_weight: float = 0.5,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            student, teacher, ce_weight=ce_weight, kd_weight=kd_weight, temperature=temperature,
            fp_epochs=fp_epochs, **kwargs,
        )
        self.fp_epochs = fp_epochs

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, hparams: dict[str, Any]) -> None:
        if not hasattr(student.module, "set_quantization"):
            raise ValueError(
                "method=apprentice_finetune (Apprentice scheme C) quantises the student after "
                f"method.fp_epochs full-precision epochs: give the student bit-widths, e.g. "
                f"+student.quantize.weight_bits=4 +student.quantize.activation_bits=8 (student {student.name!r} has none)"
            )
        fp_epochs = hparams.get("fp_epochs", 1)
        if isinstance(fp_epochs, bool) or not isinstance(fp_epochs, int) or fp_epochs < 0:
            raise ValueError(f"method.fp_epochs must be an integer >= 0 (full-precision epochs first), got {fp_epochs!r}")

    def on_train_epoch_start(self) -> None:
        self.student.set_quantization(self.current_epoch >= self.fp_epochs)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.trainer.state.fn == "fit":  # validate the student as it is this epoch
            self.student.set_quantization(self.current_epoch >= self.fp_epochs)

    def on_test_start(self) -> None:
        super().on_test_start()
        self.student.set_quantization(True)  # tested and reported as the quantised model
