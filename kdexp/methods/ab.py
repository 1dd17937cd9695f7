"""``ab``: Heo et al. 2019, "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons"."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from kdexp.connectors import HintRegressor
from kdexp.losses import ab_loss
from kdexp.methods.feature import Shape
from kdexp.methods.options import positive, weight
from kdexp.methods.registry import register_method
from kdexp.methods.staged import InitStageModule
from kdexp.models import BuiltModel


@register_method("ab")
class ActivationBoundariesModule(InitStageModule):
    """AB in FitNets' two stages (:class:`~kdexp.methods.staged.StagedFeatureModule`, stage 1 =
    ``init_epochs``):

    * epochs < ``init_epochs`` (RepDistiller's initialisation): ``loss = ab_weight · ab_loss``
      (:func:`kdexp.losses.ab_loss`, margin ``m``) on every declared stage, through a connector per
      pair (identity where channels and size match, else RepDistiller's ``ConvReg`` without ReLU),
      training the connectors and the student's layers up to the deepest stage;
    * from then on: ``ce_weight · CE + kd_weight · KD`` (the connectors frozen).

    RepDistiller compares *pre-activation* features; kdexp's hooks see the stage outputs
    (after the ReLU). For the teacher this gives the same boundaries (only ``t > 0`` matters); on
    the student side the connector sees the post-ReLU map, so where the connector is the identity
    the student's negative half of the hinge is unreachable. RepDistiller runs its initialisation
    as a separate loop with its own SGD optimizer before the 240 epochs; here the two stages share
    one optimizer and LR schedule.

    Defaults (RepDistiller CIFAR-100): ``init_epochs=30``, ``ab_weight=1`` (its init loss is
    unweighted; the script's ``-b 1`` multiplies a term that is 0 after initialisation),
    ``margin=1``, ``ce_weight=1``, ``kd_weight=0``. One optimizer and LR schedule span both stages
    (``trainer.max_epochs`` counts both: 270 for the full benchmark recipe).
    """

    @dataclass
    class Options(InitStageModule.Options):  # init_epochs (30) inherited
        ab_weight: float = weight(1.0, search=(0.1, 10.0, "log"))
        margin: float = positive(1.0, "the hinge margin m; the paper uses 1")

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """All declared stages (RepDistiller ``feat[1:-1]``)."""
        return list(model.stages), False

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape]) -> nn.ModuleList:
        return nn.ModuleList(
            nn.Identity() if s[1:] == t[1:] else HintRegressor(s[1:], t[1:], use_relu=False)
            for s, t in zip(s_shapes, t_shapes)
        )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        mapped = [connector(fs) for connector, fs in zip(self.regressors, student_feats)]
        return {"ab": (self.ab_weight, ab_loss(mapped, teacher_feats, self.margin))}
