"""``ab``: Heo et al. 2019, "Knowledge Transfer via Distillation of Activation Boundaries Formed by
Hidden Neurons"."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kdexp.connectors import HintRegressor
from kdexp.losses import ab_loss
from kdexp.methods.feature import Shape
from kdexp.methods.hints import HintsModule
from kdexp.models import BuiltModel

# FitNets' own options, which the methods reusing its stages do not take.
_HINT_ONLY = ("hint_weight", "hint_epochs", "kd_weight_end", "regressor_relu")


def check_init_stage(method: str, hparams: dict[str, Any], weight_key: str) -> None:
    """Options of a method built on FitNets' two stages: ``init_epochs`` >= 0, none of FitNets'
    own option names (this method's are ``init_epochs`` and ``weight_key``)."""
    given = [k for k in _HINT_ONLY if k in hparams]
    if given:
        raise ValueError(
            f"method {method!r} has no option(s) {given}: its initialisation stage is set by "
            f"method.init_epochs and its weight by method.{weight_key}"
        )
    epochs = hparams.get("init_epochs", 30)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(
            f"method.init_epochs must be an integer >= 0 (epochs of the initialisation stage; "
            f"RepDistiller 30, 0 = no separate stage), got {epochs!r}"
        )


class ActivationBoundariesModule(HintsModule):
    """AB in FitNets' two stages (:class:`~kdexp.methods.hints.HintsModule`, ``hint_epochs`` =
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

    method_name = "ab"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        ab_weight: float = 1.0,
        margin: float = 1.0,
        init_epochs: int = 30,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        check_init_stage("ab", {"init_epochs": init_epochs, **kwargs}, "ab_weight")
        if not float(margin) > 0:
            raise ValueError(f"method.margin must be > 0 (the hinge margin m; the paper uses 1), got {margin!r}")
        super().__init__(
            student,
            teacher,
            hint_weight=ab_weight,
            hint_epochs=init_epochs,
            regressor_relu=False,
            ab_weight=ab_weight,
            init_epochs=init_epochs,
            margin=margin,
            **kwargs,
        )
        self.margin = float(margin)

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, hparams: dict[str, Any]) -> None:
        check_init_stage("ab", hparams, "ab_weight")
        super().check_models(student, teacher, hparams)

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """All declared stages (RepDistiller ``feat[1:-1]``)."""
        return list(model.stages), False

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape], use_relu: bool) -> nn.ModuleList:
        return nn.ModuleList(
            nn.Identity() if s[1:] == t[1:] else HintRegressor(s[1:], t[1:], use_relu=False)
            for s, t in zip(s_shapes, t_shapes)
        )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        mapped = [connector(fs) for connector, fs in zip(self.regressors, student_feats)]
        return {"ab": (self.hint_weight, ab_loss(mapped, teacher_feats, self.margin))}
