"""``nst``: Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer"."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import nst_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method


@register_method("nst")
class NSTModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + nst_weight · Σ_stages MMD²_poly(f_s, f_t).

    Squared MMD with the polynomial kernel ``(a·b)²`` between the L2-normalised channel maps of
    each stage pair (:func:`kdexp.losses.nst_loss`, RepDistiller's full form); the larger map is
    average-pooled to the smaller, channel counts may differ. No parameters.

    Defaults (RepDistiller CIFAR-100): ``nst_weight=50`` (β), ``ce_weight=1``, ``kd_weight=0``, all
    declared stages of both models paired in order (RepDistiller ``feat[1:-1]``).
    """

    @dataclass
    class Options(FeatureDistillationModule.Options):
        nst_weight: float = weight(50.0, search=(5.0, 500.0, "log"))  # β

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(nst_loss(fs, ft) for fs, ft in zip(student_feats, teacher_feats))
        return {"nst": (self.nst_weight, loss)}
