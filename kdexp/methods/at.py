"""``at``: Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (attention transfer)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kdexp.losses import at_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape, describe_pairs
from kdexp.models import BuiltModel


class AttentionTransferModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + at_weight · Σ_j mean_{b,hw} (Q_s^j - Q_t^j)^2.

    ``Q = normalize_L2(flatten(mean_c |f|^p))`` per sample (:func:`kdexp.losses.attention_map`);
    the squared difference is averaged over batch *and* spatial positions, as the authors'
    reference code, and summed over the stage pairs j. Where spatial sizes differ the larger map
    is average-pooled to the smaller one; channel counts may differ (no connector, no parameters).

    Defaults (RepDistiller CIFAR-100): ``at_weight=1000`` (β, calibrated for that mean), ``p=2``,
    ``ce_weight=1``, ``kd_weight=0``, all declared stages of both models, paired in order.
    """

    method_name = "at"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        at_weight: float = 1000.0,
        p: float = 2.0,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        if not float(p) > 0:
            raise ValueError(f"method.p must be > 0 (the paper uses 2), got {p!r}")
        super().__init__(
            student,
            teacher,
            at_weight=at_weight,
            p=p,
            **kwargs,
        )
        self.at_weight, self.p = float(at_weight), float(p)

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        if any(len(s) != 4 for s in student_shapes + teacher_shapes):
            raise ValueError(
                "method 'at' needs 4-D feature maps (B, C, H, W) on both sides; the chosen layers "
                f"give {describe_pairs(student_shapes, teacher_shapes)} (student "
                f"{self.student_layers} -> teacher {self.teacher_layers})."
            )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        return {"at": (self.at_weight, at_loss(student_feats, teacher_feats, self.p))}
