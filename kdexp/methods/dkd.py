"""``dkd``: Zhao et al. 2022, "Decoupled Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import dkd_nontarget_loss, dkd_target_loss
from kdexp.methods.base import LogitDistillationModule
from kdexp.methods.options import at_least, weight
from kdexp.methods.registry import register_method

WARMUP_WHY = "epochs of the linear warm-up of the method's terms; 0 = no warm-up"


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """``min((epoch + 1) / warmup_epochs, 1)`` for a 0-based epoch: mdistiller's linear warm-up
    ``min(epoch / warmup, 1)`` with its 1-based epochs; 1 without warm-up."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)


@register_method("dkd")
class DKDModule(LogitDistillationModule):
    """loss = ce_weight · CE + w(e) · (tckd_weight · TCKD + nckd_weight · NCKD) (+ kd_weight · KD).

    TCKD: ``T² KL`` of the binary target / non-target distributions; NCKD: ``T² KL`` among the
    non-target classes (:func:`kdexp.losses.dkd_target_loss`, :func:`~kdexp.losses.
    dkd_nontarget_loss`), both batchmean. ``w(e) = min((e + 1) / warmup_epochs, 1)`` ramps both in
    linearly over the first epochs (mdistiller). With ``logit_standardization`` both models' logits
    are z-scored first (Sun et al. 2024). Logged raw as ``train/tckd_loss``, ``train/nckd_loss``.

    Defaults (mdistiller CIFAR-100): α = ``tckd_weight=1``, β = ``nckd_weight=8``, ``T=4``,
    ``warmup_epochs=20``, ``ce_weight=1``. mdistiller sets β per pair: 2 for resnet56→resnet20
    and resnet110→resnet32, 6 for the WRN and VGG pairs, 8 otherwise (``method.nckd_weight=...``).
    """

    @dataclass
    class Options(LogitDistillationModule.Options):  # ce_weight 1, kd_weight 0, temperature 4 inherited
        tckd_weight: float = weight(1.0, search=(0.1, 10.0, "log"))  # α
        nckd_weight: float = weight(8.0, search=(0.8, 80.0, "log"))  # β
        warmup_epochs: int = at_least(20, 0, WARMUP_WHY)

    def logit_losses(self, s: Tensor, t: Tensor, y: Tensor) -> dict[str, tuple[float, Tensor]]:
        ramp = warmup_factor(self.current_epoch, self.warmup_epochs)
        return {
            "tckd": (ramp * self.tckd_weight, dkd_target_loss(s, t, y, self.temperature)),
            "nckd": (ramp * self.nckd_weight, dkd_nontarget_loss(s, t, y, self.temperature)),
        }
