"""``ft``: Kim et al. 2018, "Paraphrasing Complex Network: Network Compression via Factor
Transfer"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.connectors import Paraphraser, Translator
from kdexp.losses import factor_loss
from kdexp.methods.feature import Shape
from kdexp.methods.options import option, weight
from kdexp.methods.registry import register_method
from kdexp.methods.staged import InitStageModule
from kdexp.models import BuiltModel


@register_method("ft")
class FactorTransferModule(InitStageModule):
    """FT in FitNets' two stages (:class:`~kdexp.methods.staged.StagedFeatureModule`, stage 1 =
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

    @dataclass
    class Options(InitStageModule.Options):  # init_epochs (30) inherited
        ft_weight: float = weight(200.0, search=(20.0, 2000.0, "log"))  # β
        paraphraser_weight: float = weight(1.0, "the weight of stage 1's reconstruction loss; >= 0")
        rate: float = option(
            0.5, "the paraphraser's factor rate k; RepDistiller 0.5", low=0.0, high=1.0, strict=True
        )

    features_in_second_stage = True  # the factor loss trains the translator in stage 2

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)  # builds the paraphraser (make_regressors)
        s_shapes, t_shapes = self.feature_shapes
        self.translator = Translator(s_shapes[0][1], t_shapes[0][1], rate=self.rate)

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The last declared stage (RepDistiller ``feat[-2]``)."""
        return list(model.stages[-1:]), False

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape]) -> nn.ModuleList:
        return nn.ModuleList(Paraphraser(t[1], rate=self.rate) for t in t_shapes[:1])

    @property
    def paraphraser(self) -> Paraphraser:
        return self.regressors[0]

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        fs, ft = student_feats[0], teacher_feats[0]
        if self.in_first_stage:
            return {"ft_paraphraser": (self.paraphraser_weight, F.mse_loss(self.paraphraser(ft), ft))}
        return {"ft": (self.ft_weight, factor_loss(self.translator(fs), self.paraphraser.encode(ft)))}
