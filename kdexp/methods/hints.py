"""``hints``: FitNets, Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from kdexp.connectors import HintRegressor
from kdexp.losses import hint_loss
from kdexp.methods.feature import Shape
from kdexp.methods.options import at_least, weight
from kdexp.methods.registry import register_method
from kdexp.methods.staged import StagedFeatureModule
from kdexp.models import BuiltModel


@register_method("hints")
class HintsModule(StagedFeatureModule):
    """FitNets hints: a regressor ``r`` maps the student's guided layer to the teacher's hint layer.

    ``hint_loss = mean((r(f_s) - f_t)^2)`` over all elements (:func:`kdexp.losses.hint_loss`),
    summed over the layer pairs; ``r`` is a :class:`~kdexp.connectors.HintRegressor` per pair
    (conv / transposed conv + BN + ReLU), sized by a dry forward pass for any mismatch of channels
    and spatial size. The regressors are registered submodules: in the optimizer and the checkpoint.

    Two schedules:

    * ``hint_epochs = 0`` (default, the CIFAR-100 benchmark's single-stage variant, RepDistiller):
      ``loss = ce_weight · CE + kd_weight · KD + hint_weight · hint_loss`` every step, with
      ``ce_weight=1, kd_weight=0, hint_weight=100`` on hint layer 2 (the second declared stage).
    * ``hint_epochs = N > 0`` (the paper's two stages): for epochs ``< N`` the loss is
      ``hint_weight · hint_loss`` alone, so only the student's layers up to the guided layer and the
      regressors get gradients (CE is still logged, detached, for monitoring); from epoch ``N`` on
      the loss is ``ce_weight · CE + kd_weight · KD`` (the paper's KD stage) and the regressors are
      frozen (``requires_grad_(False)``). With ``kd_weight_end`` set, the KD weight decays linearly
      from ``kd_weight`` at epoch N to ``kd_weight_end`` at the last epoch, as the paper's λ.
      Multi-GPU: stage 1 leaves the student's layers after the guided layer without gradients,
      so DDP needs ``trainer.strategy=ddp_find_unused_parameters_true``.

    One optimizer and one LR schedule span both stages (``trainer.max_epochs`` counts both). The
    stage mechanism is :class:`~kdexp.methods.staged.StagedFeatureModule`'s, shared with AB, FSP
    and FT (which count their stage 1 with ``init_epochs`` and take none of these options).
    """

    @dataclass
    class Options(StagedFeatureModule.Options):
        hint_weight: float = weight(100.0, search=(1.0, 1000.0, "log"))
        hint_epochs: int = at_least(0, 0, "0 = single stage")
        kd_weight_end: float | None = weight(None, "the KD weight at the last epoch; null = constant")
        regressor_relu: bool = True

        def __post_init__(self) -> None:
            if self.kd_weight_end is not None and self.kd_weight_end > 0 and self.kd_weight <= 0:
                raise ValueError("method.kd_weight_end needs method.kd_weight > 0 (the KD weight it decays from)")

    stage_option = "hint_epochs"

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)  # builds self.regressors (make_regressors)
        self.kd_weight_start = self.kd_weight

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape]) -> nn.ModuleList:
        """One regressor per layer pair, trained in stage 1 and frozen from the KD stage on."""
        return nn.ModuleList(
            HintRegressor(s[1:], t[1:], use_relu=self.regressor_relu) for s, t in zip(s_shapes, t_shapes)
        )

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The second declared stage (RepDistiller ``--hint_layer 2``), or the only one."""
        stages = list(model.stages)
        return ([stages[min(1, len(stages) - 1)]] if stages else []), False

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes, " for its conv regressor")

    # --- the two stages (the mechanism: kdexp.methods.staged) --------------------------------
    @property
    def in_hint_stage(self) -> bool:
        """True while the two-stage schedule is in stage 1 (epochs < hint_epochs)."""
        return self.in_first_stage

    def stage_one_terms(self) -> str:
        return "hint loss"

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # freezes the regressors when stage 2 begins
        if not self.in_first_stage and self.kd_weight_end is not None:
            self.kd_weight = self._annealed_kd_weight()

    def _annealed_kd_weight(self) -> float:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return self.kd_weight_start
        span = max_epochs - 1 - self.hint_epochs
        frac = 1.0 if span <= 0 else min(max((self.current_epoch - self.hint_epochs) / span, 0.0), 1.0)
        return self.kd_weight_start + (self.kd_weight_end - self.kd_weight_start) * frac

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(
            hint_loss(regressor(fs), ft)
            for regressor, fs, ft in zip(self.regressors, student_feats, teacher_feats)
        )
        return {"hint": (self.hint_weight, loss)}
