"""``rkd``: Park et al. 2019, "Relational Knowledge Distillation" (distance- and angle-wise)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import rkd_angle_loss, rkd_distance_loss
from kdexp.methods.feature import EmbeddingDistillationModule
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method


@register_method("rkd")
class RelationalKDModule(EmbeddingDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD
    + rkd_weight · (distance_weight · L_dist + angle_weight · L_angle).

    ``L_dist = smooth_l1(ψ_D^s, ψ_D^t)`` over all pairs, ``ψ_D(i, j) = ||e_i - e_j|| / μ`` with μ the
    batch's mean pairwise distance (:func:`kdexp.losses.rkd_distance_loss`); ``L_angle =
    smooth_l1(ψ_A^s, ψ_A^t)`` over all triplets, ``ψ_A(i, j, k) = cos∠e_i e_j e_k``
    (:func:`kdexp.losses.rkd_angle_loss`). Logged separately as ``train/rkd_distance_loss`` and
    ``train/rkd_angle_loss`` (raw), each weighted ``rkd_weight · distance_weight`` /
    ``rkd_weight · angle_weight`` in ``train/loss``. Summed over the layer pairs.

    Defaults (RepDistiller CIFAR-100): ``distance_weight=25``, ``angle_weight=50``,
    ``rkd_weight=1`` (β), ``ce_weight=1``, ``kd_weight=0``, on the penultimate embedding: the
    *input* of each model's classifier (``BuiltModel.classifier``). Paths given in
    ``student_layers`` / ``teacher_layers`` are hooked at their outputs and flattened to (b, -1).
    """

    @dataclass
    class Options(EmbeddingDistillationModule.Options):
        distance_weight: float = weight(25.0, search=(1.0, 100.0, "log"))
        angle_weight: float = weight(50.0, search=(1.0, 100.0, "log"))
        rkd_weight: float = weight(1.0)  # β

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        pairs = list(zip(student_feats, teacher_feats))
        distance = sum(rkd_distance_loss(fs, ft) for fs, ft in pairs)
        angle = sum(rkd_angle_loss(fs, ft) for fs, ft in pairs)
        return {
            "rkd_distance": (self.rkd_weight * self.distance_weight, distance),
            "rkd_angle": (self.rkd_weight * self.angle_weight, angle),
        }
