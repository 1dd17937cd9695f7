"""``sp``: Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import sp_loss
from kdexp.methods.feature import FeatureDistillationModule
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("sp")
class SimilarityPreservingModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + sp_weight · Σ_pairs ||G_s - G_t||_F^2 / b^2.

    ``G = normalize_rows(F F^T)`` with ``F`` the (b, -1)-flattened feature of a batch of b samples
    (:func:`kdexp.losses.sp_loss`): the b x b similarity of the samples, so feature sizes may
    differ between student and teacher. Summed over the layer pairs (the paper's sum over pairs).

    Defaults (RepDistiller CIFAR-100): ``sp_weight=3000`` (γ), ``ce_weight=1``, ``kd_weight=0``, on
    the last declared stage of each model.
    """

    @dataclass
    class Options(FeatureDistillationModule.Options):
        sp_weight: float = weight(3000.0, search=(100.0, 1e4, "log"))  # γ

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The last declared stage (RepDistiller ``feat[-2]``)."""
        return list(model.stages[-1:]), False

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(sp_loss(fs, ft) for fs, ft in zip(student_feats, teacher_feats))
        return {"sp": (self.sp_weight, loss)}
