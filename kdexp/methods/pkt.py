"""``pkt``: Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge
Transfer"."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from kdexp.losses import pkt_loss
from kdexp.methods.feature import EmbeddingDistillationModule
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method


@register_method("pkt")
class PKTModule(EmbeddingDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + pkt_weight · mean_{i,j} P^t_ij log(P^t_ij / P^s_ij).

    ``P_ij`` the cosine-kernel conditional probabilities of the batch's embeddings
    (:func:`kdexp.losses.pkt_loss`; RepDistiller's mean over the B x B entries, where the paper
    sums per-row divergences). No parameters; feature sizes may differ.

    Defaults (RepDistiller CIFAR-100): ``pkt_weight=30000`` (β), ``ce_weight=1``, ``kd_weight=0``,
    on the penultimate embedding: the *input* of each model's classifier (``feat[-1]``).
    """

    @dataclass
    class Options(EmbeddingDistillationModule.Options):
        pkt_weight: float = weight(30000.0, search=(3e3, 3e5, "log"))  # β

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(pkt_loss(fs, ft) for fs, ft in zip(student_feats, teacher_feats))
        return {"pkt": (self.pkt_weight, loss)}
