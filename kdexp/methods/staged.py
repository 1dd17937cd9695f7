"""Two training stages for feature methods: FitNets' schedule, shared by ``hints``, ``ab``, ``fsp``
and ``ft`` without sharing their options.

:class:`StagedFeatureModule` holds the mechanism: the connectors a method trains in stage 1
(``self.regressors``, built by :meth:`~StagedFeatureModule.make_regressors`), stage 1's loss (the
method's own terms alone; CE logged, detached), their freezing when stage 2 begins, and the warning
when a run would end inside stage 1. Which option counts stage 1's epochs is the class attribute
``stage_option``: FitNets' ``hint_epochs``; ``init_epochs`` for the methods that run RepDistiller's
initialisation (:class:`InitStageModule`, whose ``Options`` add only ``init_epochs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from kdexp.methods.base import DistillationModule
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.options import at_least
from kdexp.models import BuiltModel

log = logging.getLogger(__name__)


class StagedFeatureModule(FeatureDistillationModule):
    """A feature method with an optional first stage of ``<stage_option>`` epochs.

    * ``<stage_option> = 0``: one stage, ``ce_weight · CE + kd_weight · KD + the method's terms``
      every step.
    * ``<stage_option> = N > 0``: for epochs ``< N`` the loss is the method's own terms alone
      (everything but ``ce`` and ``kd``; CE is still logged, detached, for monitoring), so only the
      student's layers up to the deepest hooked layer and the connectors get gradients; from epoch
      ``N`` on ``self.regressors`` are frozen (``requires_grad_(False)``) and the loss is
      ``ce_weight · CE + kd_weight · KD`` — plus the method's terms where
      ``features_in_second_stage`` (FT's factor loss).

    One optimizer and one LR schedule span both stages (``trainer.max_epochs`` counts both).
    Multi-GPU: stage 1 leaves the student's layers after the hooked ones without gradients, so DDP
    needs ``trainer.strategy=ddp_find_unused_parameters_true``.
    """

    # The option that counts stage 1's epochs (a field of the subclass's Options).
    stage_option: ClassVar[str] = "init_epochs"
    # True where stage 2 still needs the hooked features (its own terms continue after stage 1).
    features_in_second_stage: ClassVar[bool] = False

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)
        s_shapes, t_shapes = self.feature_shapes
        self.regressors = self.make_regressors(s_shapes, t_shapes)

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape]) -> nn.ModuleList:
        """The connectors trained in stage 1 and frozen from stage 2 on (FitNets: one regressor per
        layer pair; AB a connector per pair, FSP none, FT the paraphraser)."""
        return nn.ModuleList()

    # --- the two stages ------------------------------------------------------------------------
    @property
    def stage_epochs(self) -> int:
        """Epochs of stage 1 (0: a single stage)."""
        return int(getattr(self, self.stage_option))

    @property
    def in_first_stage(self) -> bool:
        """True while the two-stage schedule is in stage 1 (epochs < ``stage_epochs``)."""
        return self.stage_epochs > 0 and self.current_epoch < self.stage_epochs

    @property
    def in_second_stage(self) -> bool:
        """True once a two-stage schedule has left stage 1 (never in a single-stage run)."""
        return self.stage_epochs > 0 and not self.in_first_stage

    def stage_one_terms(self) -> str:
        """What stage 1 trains on, for the warning of a run that never leaves it."""
        return "the method's own loss"

    def on_fit_start(self) -> None:
        super().on_fit_start()
        max_epochs, epochs = self.trainer.max_epochs, self.stage_epochs
        if epochs and max_epochs is not None and 0 <= max_epochs <= epochs:
            rank_zero_warn(
                f"{self.method_name}: method.{self.stage_option}={epochs} >= trainer.max_epochs={max_epochs}: "
                f"the run ends inside stage 1 ({self.stage_one_terms()} only) and never reaches the KD stage."
            )

    def on_train_epoch_start(self) -> None:
        if not self.in_second_stage:
            return
        if any(p.requires_grad for p in self.regressors.parameters()):
            self.regressors.requires_grad_(False)  # unused from here on: no updates, no decay
            for p in self.regressors.parameters():
                p.grad = None
            log.info(
                "%s: epoch %d starts stage 2 (CE + KD); stage-1 connectors frozen", self.method_name, self.current_epoch
            )

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        if self.in_second_stage and not self.features_in_second_stage:
            return DistillationModule.training_losses(self, x, y)  # plain CE + KD, no hooks needed
        logits, terms = super().training_losses(x, y)
        if self.in_first_stage:
            # Stage 1: the method's own terms alone; CE is logged, not trained on.
            own = {k: v for k, v in terms.items() if k not in ("ce", "kd")}
            terms = {**own, "ce": (0.0, terms["ce"][1].detach())}
        return logits, terms

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        if self.in_second_stage and not self.features_in_second_stage:
            return {}  # stage 2: CE + KD only
        return super().extra_losses(x, y, student_logits, teacher_logits)


class InitStageModule(StagedFeatureModule):
    """A method with RepDistiller's initialisation stage (AB, FSP, FT): stage 1 lasts
    ``init_epochs`` (RepDistiller 30; 0 = no separate stage)."""

    @dataclass
    class Options(FeatureDistillationModule.Options):
        init_epochs: int = at_least(30, 0, "epochs of the initialisation stage; RepDistiller 30, 0 = no separate stage")

    stage_option = "init_epochs"

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes)  # conv connectors, flows, factors
