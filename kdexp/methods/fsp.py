"""``fsp``: Yim et al. 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning" (flow of solution procedure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from kdexp.losses import fsp_loss
from kdexp.methods.feature import Shape, describe_pairs
from kdexp.methods.options import weight
from kdexp.methods.registry import register_method
from kdexp.methods.staged import InitStageModule
from kdexp.models import BuiltModel


# The module whose output is RepDistiller's f0 (the stem) in kdexp's CIFAR models, by class.
_STEMS = {"CifarResNet": "relu", "WideResNet": "conv1", "VGG": "block0"}


@register_method("fsp")
class FSPModule(InitStageModule):
    """FSP in FitNets' two stages (:class:`~kdexp.methods.staged.StagedFeatureModule`, stage 1 =
    ``init_epochs``):

    * epochs < ``init_epochs``: ``loss = fsp_weight · Σ_k mean (G_s^k - G_t^k)²`` over the FSP
      matrices of consecutive declared stages (:func:`kdexp.losses.fsp_loss`), training the
      student's layers up to the deepest stage (no connectors: FSP needs equal channel counts
      stage by stage, i.e. same-family pairs — the CRD paper has no cross-family FSP row);
    * from then on: ``ce_weight · CE + kd_weight · KD``.

    Default layers: RepDistiller's ``feat[:-1]``, the stem's output (f0) followed by the declared
    stages, for kdexp's CIFAR ResNets, WRNs and VGGs (their stem modules: ``relu``, ``conv1``,
    ``block0``); the declared stages alone for other models. RepDistiller runs its initialisation
    as a separate loop with its own SGD optimizer; here the two stages share one.

    Defaults (RepDistiller CIFAR-100): ``init_epochs=30``, ``fsp_weight=1`` (its init loss is
    unweighted; the script's ``-b 50`` multiplies a term that is 0 after initialisation),
    ``ce_weight=1``, ``kd_weight=0``.
    """

    @dataclass
    class Options(InitStageModule.Options):  # init_epochs (30) inherited
        fsp_weight: float = weight(1.0, search=(0.1, 10.0, "log"))

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The stem's output (RepDistiller's f0, where kdexp's CIFAR model names it) and every
        declared stage."""
        stem = _STEMS.get(type(model.module).__name__)
        return ([stem] if stem else []) + list(model.stages), False

    @classmethod
    def check_layer_choice(cls, student: BuiltModel, teacher: BuiltModel, student_layers: Any, teacher_layers: Any) -> None:
        families = type(student.module).__name__, type(teacher.module).__name__
        if student_layers is None and teacher_layers is None and families[0] != families[1]:
            raise ValueError(
                f"method 'fsp' needs equal channel counts layer by layer, i.e. a same-family pair "
                f"(the CRD paper has no cross-family FSP row), but student {student.name!r} is a "
                f"{families[0]} and teacher {teacher.name!r} a {families[1]}; choose a same-family "
                "pair, or set method.student_layers / method.teacher_layers to layers whose channel "
                "counts agree."
            )

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        super().check_features(student_shapes, teacher_shapes)
        pairs = describe_pairs(student_shapes, teacher_shapes)
        if len(student_shapes) < 2:
            raise ValueError(
                f"method 'fsp' needs at least 2 layers per model (it compares the flow between "
                f"consecutive layers); the chosen layers give {pairs}."
            )
        if [s[1] for s in student_shapes] != [t[1] for t in teacher_shapes]:
            raise ValueError(
                "method 'fsp' needs equal channel counts layer by layer (same-family pairs, as "
                f"RepDistiller's FSP); the chosen layers give {pairs} (student "
                f"{self.student_layers} -> teacher {self.teacher_layers})."
            )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        return {"fsp": (self.fsp_weight, fsp_loss(student_feats, teacher_feats))}  # no connectors
