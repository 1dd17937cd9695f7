"""``vid``: Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer"."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from kdexp.connectors import VIDRegressor
from kdexp.losses import vid_loss
from kdexp.methods.feature import FeatureDistillationModule, Shape, describe_pairs
from kdexp.models import BuiltModel


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

    method_name = "vid"

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel,
        vid_weight: float = 1.0,
        **kwargs: Any,  # ce_weight, kd_weight, temperature, *_layers: see the bases
    ) -> None:
        super().__init__(student, teacher, vid_weight=vid_weight, **kwargs)
        self.vid_weight = float(vid_weight)
        s_shapes, t_shapes = self.feature_shapes
        self.regressors = nn.ModuleList(VIDRegressor(s[1], t[1], t[1]) for s, t in zip(s_shapes, t_shapes))

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        if any(len(s) != 4 for s in student_shapes + teacher_shapes):
            raise ValueError(
                "method 'vid' needs 4-D feature maps (B, C, H, W) on both sides for its 1x1-conv "
                f"regressors; the chosen layers give {describe_pairs(student_shapes, teacher_shapes)} "
                f"(student {self.student_layers} -> teacher {self.teacher_layers})."
            )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        loss = 0.0
        for regressor, fs, ft in zip(self.regressors, student_feats, teacher_feats):
            fs, ft = regressor.align(fs, ft)
            loss = loss + vid_loss(regressor(fs), ft, regressor.log_scale, regressor.eps)
        return {"vid": (self.vid_weight, loss)}
