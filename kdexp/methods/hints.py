"""``hints``: FitNets, Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"."""

from __future__ import annotations

import logging
from typing import Any

from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from kdexp.connectors import HintRegressor
from kdexp.losses import hint_loss
from kdexp.methods.base import DistillationModule
from kdexp.methods.feature import FeatureDistillationModule, Shape, describe_pairs
from kdexp.models import BuiltModel

log = logging.getLogger(__name__)


class HintsModule(FeatureDistillationModule):
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

    One optimizer and one LR schedule span both stages (``trainer.max_epochs`` counts both).
    """

    method_name = "hints"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        hint_weight: float = 100.0,
        hint_epochs: int = 0,
        kd_weight_end: float | None = None,
        regressor_relu: bool = True,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        if isinstance(hint_epochs, bool) or not isinstance(hint_epochs, int) or hint_epochs < 0:
            raise ValueError(
                f"method.hint_epochs must be an integer >= 0 (0 = single stage), got {hint_epochs!r}"
            )
        if kd_weight_end is not None and kd_weight_end > 0 and kwargs.get("kd_weight", 0.0) <= 0:
            raise ValueError("method.kd_weight_end needs method.kd_weight > 0 (the KD weight it decays from)")
        super().__init__(
            student,
            teacher,
            hint_weight=hint_weight,
            hint_epochs=hint_epochs,
            kd_weight_end=kd_weight_end,
            regressor_relu=regressor_relu,
            **kwargs,
        )
        self.hint_weight = float(hint_weight)
        self.hint_epochs = hint_epochs
        self.kd_weight_start = self.kd_weight
        self.kd_weight_end = kd_weight_end
        s_shapes, t_shapes = self.feature_shapes
        self.regressors = self.make_regressors(s_shapes, t_shapes, regressor_relu)

    def make_regressors(self, s_shapes: list[Shape], t_shapes: list[Shape], use_relu: bool) -> nn.ModuleList:
        """The connectors trained in stage 1 and frozen from the KD stage on (FitNets: one
        regressor per pair; AB, FSP and FT, which reuse these stages, provide theirs)."""
        return nn.ModuleList(HintRegressor(s[1:], t[1:], use_relu=use_relu) for s, t in zip(s_shapes, t_shapes))

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The second declared stage (RepDistiller ``--hint_layer 2``), or the only one."""
        stages = list(model.stages)
        return ([stages[min(1, len(stages) - 1)]] if stages else []), False

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        if any(len(s) != 4 for s in student_shapes + teacher_shapes):
            raise ValueError(
                "method 'hints' needs 4-D feature maps (B, C, H, W) on both sides for its conv "
                f"regressor; the chosen layers give {describe_pairs(student_shapes, teacher_shapes)} "
                f"(student {self.student_layers} -> teacher {self.teacher_layers}). Choose conv "
                "stages with method.student_layers / method.teacher_layers."
            )

    # --- the two stages ------------------------------------------------------------------------
    @property
    def in_hint_stage(self) -> bool:
        """True while the two-stage schedule is in stage 1 (epochs < hint_epochs)."""
        return self.hint_epochs > 0 and self.current_epoch < self.hint_epochs

    def on_fit_start(self) -> None:
        super().on_fit_start()
        max_epochs = self.trainer.max_epochs
        if self.hint_epochs and max_epochs is not None and 0 <= max_epochs <= self.hint_epochs:
            rank_zero_warn(
                f"hints: method.hint_epochs={self.hint_epochs} >= trainer.max_epochs={max_epochs}: "
                "the run ends inside stage 1 (hint loss only) and never reaches the KD stage."
            )

    def on_train_epoch_start(self) -> None:
        if self.in_hint_stage:
            return
        if self.hint_epochs and any(p.requires_grad for p in self.regressors.parameters()):
            self.regressors.requires_grad_(False)  # unused from here on: no updates, no decay
            for p in self.regressors.parameters():
                p.grad = None
            log.info("hints: epoch %d starts stage 2 (CE + KD); regressors frozen", self.current_epoch)
        if self.kd_weight_end is not None:
            self.kd_weight = self._annealed_kd_weight()

    def _annealed_kd_weight(self) -> float:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return self.kd_weight_start
        span = max_epochs - 1 - self.hint_epochs
        frac = 1.0 if span <= 0 else min(max((self.current_epoch - self.hint_epochs) / span, 0.0), 1.0)
        return self.kd_weight_start + (self.kd_weight_end - self.kd_weight_start) * frac

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        if self.hint_epochs and not self.in_hint_stage:
            # Stage 2: plain CE + KD, no hooks needed.
            return DistillationModule.training_losses(self, x, y)
        logits, terms = super().training_losses(x, y)
        if self.in_hint_stage:
            # Stage 1: the hint loss alone trains the guided layers; CE is logged, not trained on.
            stage_one = {k: v for k, v in terms.items() if k not in ("ce", "kd")}  # FitNets: "hint"
            terms = {**stage_one, "ce": (0.0, terms["ce"][1].detach())}
        return logits, terms

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        if self.hint_epochs and not self.in_hint_stage:
            return {}  # stage 2: CE + KD only
        return super().extra_losses(x, y, student_logits, teacher_logits)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = sum(
            hint_loss(regressor(fs), ft)
            for regressor, fs, ft in zip(self.regressors, student_feats, teacher_feats)
        )
        return {"hint": (self.hint_weight, loss)}
