"""``reviewkd``: Chen et al. 2021, "Distilling Knowledge via Knowledge Review"."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from kdexp.connectors import ABF
from kdexp.features import FeatureHooks
from kdexp.losses import hcl_loss
from kdexp.methods.dkd import WARMUP_WHY, warmup_factor
from kdexp.methods.feature import FeatureDistillationModule, Shape
from kdexp.methods.options import at_least, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


def _pooled_dim(model: BuiltModel, role: str) -> int:
    classifier = model.module.get_submodule(model.classifier) if model.classifier else None
    if not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"method 'reviewkd' reviews the {role}'s pooled embedding, the input of its final linear "
            f"layer, but {role} {model.name!r} declares none (classifier={model.classifier!r})."
        )
    return classifier.in_features


@register_method("reviewkd")
class ReviewKDModule(FeatureDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + w(e) · reviewkd_weight · HCL(review(f_s), f_t).

    Levels: every declared stage plus the pooled embedding (the classifier's input, as a 1x1
    map), on both models. The review path runs from the deepest level to the shallowest: at each
    level an :class:`~kdexp.connectors.ABF` maps the student's feature to ``mid`` channels
    (``min(max_mid_channels, pooled dim)``), fuses it with the deeper level's residual through two
    attention maps (all but the deepest level), and outputs a map of the teacher's channels and
    size; the outputs are compared with the teacher's levels by the hierarchical context loss
    (:func:`kdexp.losses.hcl_loss`). ``w(e) = min((e + 1) / warmup_epochs, 1)``.

    mdistiller compares with the teacher's *pre-activation* stage features; kdexp's hooks see the
    stage outputs (after the ReLU), so the teacher targets here are non-negative.

    Defaults (mdistiller's CIFAR-100 config, resnet32x4 → resnet8x4): ``reviewkd_weight=5``, ``warmup_epochs=20``,
    ``max_mid_channels=512``, ``ce_weight=1``, ``kd_weight=0``. The authors' CIFAR script sets the
    weight per pair: 5 for the WRN pairs and resnet32x4 → resnet8x4, 0.6 for resnet56 → resnet20,
    1 for resnet110 → resnet32, 8 for resnet32x4 → shufflenetv2.
    """

    @dataclass
    class Options(FeatureDistillationModule.Options):
        reviewkd_weight: float = weight(5.0, search=(0.5, 50.0, "log"))
        warmup_epochs: int = at_least(20, 0, WARMUP_WHY)
        max_mid_channels: int = at_least(
            512, 1, "the ABFs' channels: min(this, the student's pooled size); mdistiller 512"
        )

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)  # refuses a missing teacher
        s_pool, t_pool = _pooled_dim(student, "student"), _pooled_dim(teacher, "teacher")
        s_shapes, t_shapes = self.feature_shapes
        in_channels = [s[1] for s in s_shapes] + [s_pool]
        out_channels = [t[1] for t in t_shapes] + [t_pool]
        mid = min(self.max_mid_channels, s_pool)
        last = len(in_channels) - 1
        self.abfs = nn.ModuleList(
            ABF(c_in, mid, c_out, fuse=i < last) for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))
        )
        self.out_sizes = [tuple(t[2:]) for t in t_shapes] + [(1, 1)]
        self._pooled: tuple[FeatureHooks, FeatureHooks] | None = None

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, options: Any) -> None:
        if teacher is not None:
            _pooled_dim(student, "student"), _pooled_dim(teacher, "teacher")
        super().check_models(student, teacher, options)

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """All declared stages (mdistiller: the stage features; the pooled level is added)."""
        return list(model.stages), False

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        self.require_feature_maps(student_shapes, teacher_shapes)

    @contextlib.contextmanager
    def _pooled_hooks(self) -> Iterator[None]:
        """The classifiers' inputs (the pooled embeddings), hooked for one training step."""
        s_hooks = FeatureHooks(self.student, [self.student_info.classifier], inputs=True)
        t_hooks = FeatureHooks(self.teacher, [self.teacher_info.classifier], inputs=True)
        self._pooled = (s_hooks, t_hooks)
        try:
            yield
        finally:
            self._pooled = None
            for hooks in (s_hooks, t_hooks):
                hooks.remove()
                hooks.clear()

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        with self._pooled_hooks():
            return super().training_losses(x, y)

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        assert self._pooled is not None
        s_pool, t_pool = (hooks.ordered()[0].flatten(1)[:, :, None, None] for hooks in self._pooled)
        xs, ts = [*student_feats, s_pool], [*teacher_feats, t_pool]
        reviewed: list[Tensor] = []
        residual = None
        for i in reversed(range(len(xs))):  # deepest level first, each fused with the one below
            out, residual = self.abfs[i](xs[i], residual, self.out_sizes[i])
            reviewed.insert(0, out)
        ramp = warmup_factor(self.current_epoch, self.warmup_epochs)
        return {"reviewkd": (ramp * self.reviewkd_weight, hcl_loss(reviewed, ts))}
