"""``dist``: Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher" (DIST)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import dist_inter_loss, dist_intra_loss
from kdexp.methods.base import LogitDistillationModule
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method


@register_method("dist")
class DISTModule(LogitDistillationModule):
    """loss = ce_weight · CE + inter_weight · T²(1 - ρ̄_inter) + intra_weight · T²(1 - ρ̄_intra).

    ρ̄_inter: the mean over samples of the Pearson correlation of student and teacher class
    probabilities ``softmax(z / T)``; ρ̄_intra: the mean over classes of the correlation across the
    batch (:func:`kdexp.losses.dist_inter_loss`, :func:`~kdexp.losses.dist_intra_loss`). With
    ``logit_standardization`` the logits are z-scored first. Logged raw as
    ``train/dist_inter_loss``, ``train/dist_intra_loss``.

    Defaults: β = ``inter_weight=2``, γ = ``intra_weight=2``, τ = ``temperature=4``,
    ``ce_weight=1``, ``kd_weight=0`` — the DIST paper's CIFAR-100 setting as kdexp's authors recall
    it (not checked against a stored copy of the paper or the authors' CIFAR code, which the
    reference repository had not published). The loss itself follows the authors' code
    (``1 - Pearson``, ``T²``). Needs batches of >= 2 samples.
    """

    @dataclass
    class Options(LogitDistillationModule.Options):  # ce_weight 1, kd_weight 0, temperature (τ) 4 inherited
        inter_weight: float = weight(2.0, search=(0.2, 20.0, "log"))  # β
        intra_weight: float = weight(2.0, search=(0.2, 20.0, "log"))  # γ

    def logit_losses(self, s: Tensor, t: Tensor, y: Tensor) -> dict[str, tuple[float, Tensor]]:
        return {
            "dist_inter": (self.inter_weight, dist_inter_loss(s, t, self.temperature)),
            "dist_intra": (self.intra_weight, dist_intra_loss(s, t, self.temperature)),
        }
