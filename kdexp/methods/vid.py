"""``vid``: Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from kdexp.connectors import VIDRegressor
from kdexp.losses import vid_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


@register_method("vid")
class VIDModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD
    + vid_weight · Σ_stages mean ½ ((r(f_s) - f_t)² / σ² + log σ²).

    Per stage pair a :class:`~kdexp.connectors.VIDRegressor` ``r`` (three 1x1 convs,
    ``C_s -> C_t -> C_t -> C_t`` as RepDistiller, mid channels = the teacher's) predicts the
    teacher's feature and a learned per-channel variance ``σ² = softplus(α) + 1e-5`` (initial 5)
    models its uncertainty (:func:`kdexp.losses.vid_loss`: RepDistiller's mean over elements; the
    paper sums). The larger map is average-pooled to the smaller before the regressor. The
    regressors and α train with the student (in the optimizer and the checkpoint).

    Defaults (RepDistiller CIFAR-100): ``vid_weight=1`` (β), ``ce_weight=1``, ``kd_weight=0``, all
    declared stages paired in order (RepDistiller ``feat[1:-1]``).
    """

    @dataclass
    class Options(FeatureDistillationModule.Options):
        vid_weight: float = weight(1.0, search=(0.1, 10.0, "log"))  # β

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)
        s_shapes, t_shapes = self.feature_shapes
        self.regressors = nn.ModuleList(VIDRegressor(s[1], t[1], t[1]) for s, t in zip(s_shapes, t_shapes))

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes, " for its 1x1-conv regressors")

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = 0.0
        for regressor, fs, ft in zip(self.regressors, student_feats, teacher_feats):
            fs, ft = regressor.align(fs, ft)
            loss = loss + vid_loss(regressor(fs), ft, regressor.log_scale, regressor.eps)
        return {"vid": (self.vid_weight, loss)}
