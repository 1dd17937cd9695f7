"""``at``: Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (attention transfer)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import at_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.options import positive, weight
from kdexp.methods.registry import register_method


@register_method("at")
class AttentionTransferModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + at_weight · Σ_j mean_{b,hw} (Q_s^j - Q_t^j)^2.

    ``Q = normalize_L2(flatten(mean_c |f|^p))`` per sample (:func:`kdexp.losses.attention_map`);
    the squared difference is averaged over batch *and* spatial positions, as the authors'
    reference code, and summed over the stage pairs j. Where spatial sizes differ the larger map
    is average-pooled to the smaller one; channel counts may differ (no connector, no parameters).

    Defaults (RepDistiller CIFAR-100): ``at_weight=1000`` (β, calibrated for that mean), ``p=2``,
    ``ce_weight=1``, ``kd_weight=0``, all declared stages of both models, paired in order.
    """

    @dataclass
    class Options(FeatureDistillationModule.Options):
        at_weight: float = weight(1000.0, search=(1.0, 1e4, "log"))  # β
        p: float = positive(2.0, "the exponent of the attention maps; the paper uses 2")

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        return {"at": (self.at_weight, at_loss(student_feats, teacher_feats, self.p))}
