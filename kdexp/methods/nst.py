"""``nst``: Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer"."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kdexp.losses import nst_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape, describe_pairs
from kdexp.models import BuiltModel


class NSTModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + nst_weight · Σ_stages MMD²_poly(f_s, f_t).

    Squared MMD with the polynomial kernel ``(a·b)²`` between the L2-normalised channel maps of
    each stage pair (:func:`kdexp.losses.nst_loss`, RepDistiller's full form); the larger map is
    average-pooled to the smaller, channel counts may differ. No parameters.

    Defaults (RepDistiller CIFAR-100): ``nst_weight=50`` (β), ``ce_weight=1``, ``kd_weight=0``, all
    declared stages of both models paired in order (RepDistiller ``feat[1:-1]``).
    """

    method_name = "nst"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        nst_weight: float = 50.0,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        super().__init__(student, teacher, nst_weight=nst_weight, **kwargs)
        self.nst_weight = float(nst_weight)

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        if any(len(s) != 4 for s in student_shapes + teacher_shapes):
            raise ValueError(
                "method 'nst' needs 4-D feature maps (B, C, H, W) on both sides; the chosen layers "
                f"give {describe_pairs(student_shapes, teacher_shapes)} (student "
                f"{self.student_layers} -> teacher {self.teacher_layers})."
            )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(nst_loss(fs, ft) for fs, ft in zip(student_feats, teacher_feats))
        return {"nst": (self.nst_weight, loss)}
