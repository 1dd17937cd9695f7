"""``cc``: Peng et al. 2019, "Correlation Congruence for Knowledge Distillation"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from kdexp.losses import cc_gaussian_loss, cc_loss
from kdexp.methods.feature import EmbeddingDistillationModule
from kdexp.methods.options import at_least, option, positive, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel

FORMS = ("reference", "gaussian")


@register_method("cc")
class CorrelationCongruenceModule(EmbeddingDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + cc_weight · L_CC(g_s(f_s), g_t(f_t)).

    ``g_s``, ``g_t``: linear embedding heads (no normalisation, RepDistiller ``LinearEmbed``) from
    each model's penultimate embedding to ``feat_dim`` (128); both train with the student — the
    teacher's head learns through the CC loss, as in RepDistiller.

    ``form``:

    * ``reference`` (default): RepDistiller's ``Correlation``, the code that produced the CIFAR-100
      table's CC row — the mean over consecutive samples of ``Σ_d |Δ_i| |Δ_{i+1}|`` with
      ``Δ = g_s - g_t`` (:func:`kdexp.losses.cc_loss`). It is *not* the paper's formula.
    * ``gaussian``: the paper's Gaussian-RBF correlation matrices by their order-``order`` Taylor
      expansion with ``gamma`` (:func:`kdexp.losses.cc_gaussian_loss`); ``||C_s - C_t||²_F / B²``.

    Defaults (RepDistiller CIFAR-100): ``cc_weight=0.02`` (β), ``feat_dim=128``, ``ce_weight=1``,
    ``kd_weight=0``, on the classifier's input.
    """

    @dataclass
    class Options(EmbeddingDistillationModule.Options):
        cc_weight: float = weight(0.02, search=(2e-3, 0.2, "log"))  # β
        feat_dim: int = at_least(128, 1, "the embedding size; RepDistiller 128")
        form: str = option("reference", f"one of {list(FORMS)}; reference = RepDistiller's code")
        gamma: float = positive(0.4, "the RBF's γ; form=gaussian only")
        order: int = at_least(2, 0, "Taylor order P; form=gaussian only")

        def __post_init__(self) -> None:
            if self.form not in FORMS:
                raise ValueError(
                    f"method.form must be one of {list(FORMS)} (reference = RepDistiller's code), got {self.form!r}"
                )

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)
        self.embed_s, self.embed_t = self.embedding_heads(self.feat_dim, normalize=False)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        e_s, e_t = self.embed_s(student_feats[0]), self.embed_t(teacher_feats[0])
        if self.form == "reference":
            return {"cc": (self.cc_weight, cc_loss(e_s, e_t))}
        return {"cc": (self.cc_weight, cc_gaussian_loss(e_s, e_t, self.gamma, self.order))}
