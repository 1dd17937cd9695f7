"""``ft``: Kim et al. 2018, "Paraphrasing Complex Network: Network Compression via Factor
Transfer"."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.connectors import Paraphraser, Translator
from kdexp.losses import factor_loss
from kdexp.methods.ab import check_init_stage
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.hints import HintsModule
from kdexp.models import BuiltModel


class FactorTransferModule(HintsModule):
    """FT in FitNets' two stages (:class:`~kdexp.methods.hints.HintsModule`, ``hint_epochs`` =
    ``init_epochs``):

    * epochs < ``init_epochs``: the paraphraser ``P`` (a conv auto-encoder of the teacher's last
      stage, factor rate ``rate``) learns to reconstruct it:
      ``loss = paraphraser_weight · MSE(P(f_t), f_t)``; the student is not trained (CE logged);
    * from then on, ``P`` frozen: ``loss = ce_weight · CE + kd_weight · KD
      + ft_weight · mean |φ(T(f_s)) - φ(P.encode(f_t))|`` with the translator ``T`` (trained with
      the student) and ``φ`` RepDistiller's factor normalisation (:func:`kdexp.losses.factor_loss`,
      which collapses channels where the paper normalises whole factors).

    RepDistiller puts the frozen paraphraser in eval mode for the KD stage; here it follows the
    module's mode, which changes nothing (no BN, no dropout in it). Its initialisation is a separate
    loop with its own SGD optimizer, at lr 0.01 for ResNet/WRN students; here both stages share one
    optimizer and LR schedule.

    Defaults (RepDistiller CIFAR-100): ``init_epochs=30``, ``ft_weight=200`` (β),
    ``paraphraser_weight=1`` (its unweighted MSE), ``rate=0.5``, ``ce_weight=1``, ``kd_weight=0``,
    on the last declared stage of each model (RepDistiller ``feat[-2]``).
    """

    method_name = "ft"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        ft_weight: float = 200.0,
        paraphraser_weight: float = 1.0,
        rate: float = 0.5,
        init_epochs: int = 30,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        check_init_stage("ft", {"init_epochs": init_epochs, **kwargs}, "ft_weight")
        if not 0 < float(rate) <= 1:
            raise ValueError(
                f"method.rate must be in (0, 1] (the paraphraser's factor rate k; RepDistiller 0.5), got {rate!r}"
            )
        super().__init__(
            student,
            teacher,
            hint_weight=paraphraser_weight,
            hint_epochs=init_epochs,
            ft_weight=ft_weight,
            paraphraser_weight=paraphraser_weight,
            rate=rate,
            init_epochs=init_epochs,
            **kwargs,
        )
        self.ft_weight = float(ft_weight)
        s_shapes, t_shapes = self.feature_shapes
        self.translator = Translator(s_shapes[0][1], t_shapes[0][1], rate=float(rate))

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, hparams: dict[str, Any]) -> None:
        check_init_stage("ft", hparams, "ft_weight")
        super().check_models(student, teacher, hparams)

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The last declared stage (RepDistiller ``feat[-2]``)."""
        return list(model.stages[-1:]), False

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape], use_relu: bool) -> nn.ModuleList:
        rate = float(self.hparams["method"].get("rate", 0.5))
        return nn.ModuleList(Paraphraser(t[1], rate=rate) for t in t_shapes[:1])

    @property
    def paraphraser(self) -> Paraphraser:
        return self.regressors[0]

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        if self.in_hint_stage:
            return super().training_losses(x, y)  # stage 1: only the paraphraser's term trains
        return FeatureDistillationModule.training_losses(self, x, y)  # stage 2 needs the features

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        return FeatureDistillationModule.extra_losses(self, x, y, student_logits, teacher_logits)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        fs, ft = student_feats[0], teacher_feats[0]
        if self.in_hint_stage:
            return {"ft_paraphraser": (self.hint_weight, F.mse_loss(self.paraphraser(ft), ft))}
        return {"ft": (self.ft_weight, factor_loss(self.translator(fs), self.paraphraser.encode(ft)))}
