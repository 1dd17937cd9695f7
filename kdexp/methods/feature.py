"""The shared base of the feature-based methods (``hints``, ``at``, ``sp``, ``rkd``).

Intermediate features are taken with forward hooks on module paths (:class:`kdexp.features.
FeatureHooks`), so any registered, torchvision or timm model can be teacher or student without
being edited.

Layer choice, per side: ``method.student_layers`` / ``method.teacher_layers`` are lists of module
paths; ``null`` means the method's benchmark default for that model (see each method's
``default_layers``: AT all declared stages, SP the last stage, FitNets the second stage, RKD the
classifier's *input*). A path that is given explicitly is hooked at its *output*. The i-th student
path is paired with the i-th teacher path, so both lists must have the same length.

Checks before training (in ``__init__``): every path exists (the error names the available paths)
and the two lists pair up (:meth:`FeatureDistillationModule.resolve_layers`, which needs only the
architectures, so it can also run before a teacher is trained); then one dry forward pass of both
models on ``zeros(2, *input_shape)`` (eval mode, no grad; the student's train mode is restored)
shows that every hooked module runs and gives a tensor. Subclasses validate the shapes there and
size their connectors from them (``self.feature_shapes``).

Hooks live only for the duration of one training step's forwards (registered on entry, removed
and emptied on exit), so features are never kept between steps and validation, testing and
profiling run the bare models.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdexp.connectors import Embed
from kdexp.features import FeatureHooks, check_paths
from kdexp.methods.base import DistillationModule
from kdexp.methods.options import option
from kdexp.models import BuiltModel

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
LAYERS_WHY = "module paths, e.g. [layer2]; null = the method's default layer for the model"


class FeatureDistillationModule(DistillationModule):
    """A :class:`DistillationModule` that also sees hooked student and teacher features.

    Subclasses implement :meth:`default_layers` and :meth:`feature_losses`, and may override
    :meth:`check_features` to validate the probed shapes.
    """

    @dataclass
    class Options(DistillationModule.Options):
        student_layers: list[str] | None = option(None, LAYERS_WHY, min_items=1)
        teacher_layers: list[str] | None = option(None, LAYERS_WHY, min_items=1)

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        if teacher is None:
            raise ValueError(f"method {self.method_name!r} needs a teacher")
        # hparams keep what the config said (null stays null); the resolved paths live on self.
        super().__init__(student, teacher, **kwargs)
        (s_paths, s_inputs), (t_paths, t_inputs) = self.resolve_layers(
            student, teacher, self.options.student_layers, self.options.teacher_layers
        )
        self.student_layers, self.teacher_layers = s_paths, t_paths
        self._hook_inputs = (s_inputs, t_inputs)
        self._current: tuple[FeatureHooks, FeatureHooks] | None = None
        s_shapes, t_shapes = self._probe_shapes()
        self.check_features(s_shapes, t_shapes)
        self.feature_shapes: tuple[list[Shape], list[Shape]] = (s_shapes, t_shapes)
        where = "input" if s_inputs else "output"
        log.info(
            "%s: student %s %s %s -> teacher %s %s %s",
            self.method_name,
            student.name,
            where,
            dict(zip(s_paths, s_shapes)),
            teacher.name,
            "input" if t_inputs else "output",
            dict(zip(t_paths, t_shapes)),
        )

    # --- what subclasses provide ---------------------------------------------------------------
    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The benchmark default paths for ``model`` and whether to hook their inputs."""
        return list(model.stages), False

    def check_features(self, student_shapes: list[Shape], teacher_shapes: list[Shape]) -> None:
        """Raise ValueError if the probed (batch-included) feature shapes do not suit the method."""

    def require_feature_maps(self, student_shapes: list[Shape], teacher_shapes: list[Shape], purpose: str = "") -> None:
        """For ``check_features``: a ValueError unless every feature is a 4-D map (B, C, H, W)."""
        if any(len(s) != 4 for s in student_shapes + teacher_shapes):
            raise ValueError(
                f"method {self.method_name!r} needs 4-D feature maps (B, C, H, W) on both sides{purpose}; "
                f"the chosen layers give {describe_pairs(student_shapes, teacher_shapes)} (student "
                f"{self.student_layers} -> teacher {self.teacher_layers}). Choose conv stages with "
                "method.student_layers / method.teacher_layers."
            )

    def feature_losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor]
    ) -> dict[str, tuple[float, Tensor]]:
        """name → (weight, raw loss) from paired features (student side carries gradients)."""
        raise NotImplementedError

    # --- layers and hooks ----------------------------------------------------------------------
    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, options: Any) -> None:
        if teacher is not None:
            options = cls.options_from(options)
            cls.resolve_layers(student, teacher, options.student_layers, options.teacher_layers)

    @classmethod
    def resolve_layers(
        cls,
        student: BuiltModel,
        teacher: BuiltModel,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
    ) -> tuple[tuple[list[str], bool], tuple[list[str], bool]]:
        """((student paths, hook inputs?), (teacher paths, hook inputs?)), or a ValueError naming the
        key: a path that does not exist (with the available paths), no default, unequal lengths.

        Needs only the architectures (no forward, no weights), so it can run before a teacher is
        trained.
        """
        cls.check_layer_choice(student, teacher, student_layers, teacher_layers)
        s_paths, s_inputs = cls._resolve_side(student, student_layers, "student")
        t_paths, t_inputs = cls._resolve_side(teacher, teacher_layers, "teacher")
        if len(s_paths) != len(t_paths):
            raise ValueError(
                f"method {cls.method_name!r}: method.student_layers has {len(s_paths)} path(s) "
                f"{s_paths} but method.teacher_layers has {len(t_paths)} {t_paths}; the i-th student "
                "layer is paired with the i-th teacher layer, so give both lists the same length "
                f"(student {student.name!r} declares stages {list(student.stages)}, teacher "
                f"{teacher.name!r} declares {list(teacher.stages)})."
            )
        return (s_paths, s_inputs), (t_paths, t_inputs)

    @classmethod
    def check_layer_choice(cls, student: BuiltModel, teacher: BuiltModel, student_layers: Any, teacher_layers: Any) -> None:
        """A method's own rule for the pair and the chosen layers (a ValueError naming the keys); none here."""

    @classmethod
    def _resolve_side(
        cls, model: BuiltModel, layers: Sequence[str] | None, role: str
    ) -> tuple[list[str], bool]:
        key = f"method.{role}_layers"
        quantised = bool((model.cfg or {}).get("quantize"))
        if quantised or layers is None and not cls.default_layers(model)[0] and (model.cfg or {}).get("source", "kdexp") == "kdexp":
            from kdexp.models.registry import MODELS, available_models

            staged = [name for name in available_models() if MODELS.get(name).stages]
            why = "a quantised model runs as a traced graph that calls none of its modules' hooks" if quantised else (
                "it has no intermediate feature maps to match"
            )
            raise ValueError(
                f"method {cls.method_name!r} distils intermediate features, so it needs a {role} with feature "
                f"stages, and {role} {model.name!r} has none ({why}). Choose a {role} with feature stages "
                f"({role}=<name>{', without ' + role + '.quantize' if quantised else ''}): {', '.join(staged)}; "
                "or a method that uses only the logits (e.g. method=kd)"
            )
        if layers is None:
            paths, inputs = cls.default_layers(model)
            if not paths:
                available = ", ".join(n for n, _ in model.module.named_modules() if n)
                raise ValueError(
                    f"{key} is null and {role} {model.name!r} declares no feature stages, so method "
                    f"{cls.method_name!r} has no default layer; set {key} to a list of module "
                    f"paths. Available paths are: {available}"
                )
            return paths, inputs
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise ValueError(
                f"{key} must be a non-empty list of module paths (e.g. [layer2]) or null for the "
                f"method's default, got {layers!r}."
            )
        paths = [str(p) for p in layers]
        check_paths(model.module, paths, owner=f"{key}: {role} {model.name!r}")
        return paths, False

    @contextlib.contextmanager
    def _hooked(self) -> Iterator[tuple[FeatureHooks, FeatureHooks]]:
        """Hooks on both models for the duration of the block; removed and emptied on exit."""
        s_inputs, t_inputs = self._hook_inputs
        s_hooks = FeatureHooks(self.student, self.student_layers, inputs=s_inputs)
        try:
            t_hooks = FeatureHooks(self.teacher, self.teacher_layers, inputs=t_inputs)
        except BaseException:
            s_hooks.remove()
            raise
        try:
            yield s_hooks, t_hooks
        finally:
            for hooks in (s_hooks, t_hooks):
                hooks.remove()
                hooks.clear()

    def _collect(self, hooks: FeatureHooks, role: str) -> list[Tensor]:
        feats = []
        for path in hooks.paths:
            if path not in hooks.features:
                raise ValueError(
                    f"method {self.method_name!r}: the {role} module {path!r} (method.{role}_layers) "
                    "did not run in the forward pass, so it has no feature; choose a module that "
                    "the model's forward calls."
                )
            feat = hooks.features[path]
            if not isinstance(feat, Tensor):
                raise ValueError(
                    f"method {self.method_name!r}: the {role} module {path!r} (method.{role}_layers) "
                    f"gives a {type(feat).__name__}, not a tensor; choose a module whose output is "
                    "one tensor."
                )
            feats.append(feat)
        return feats

    def _probe_shapes(self) -> tuple[list[Shape], list[Shape]]:
        """One dry forward of both models in eval mode, without gradients: the feature shapes."""
        was_training = self.student.training
        s_param = next(self.student.parameters(), None)
        t_param = next(self.teacher.parameters(), None)
        self.student.eval()
        try:
            with torch.no_grad(), self._hooked() as (s_hooks, t_hooks):
                x = torch.zeros(2, *self.input_shape)
                self.teacher(x.to(t_param) if t_param is not None else x)
                self.student(x.to(s_param) if s_param is not None else x)
                s_shapes = [tuple(f.shape) for f in self._collect(s_hooks, "student")]
                t_shapes = [tuple(f.shape) for f in self._collect(t_hooks, "teacher")]
        finally:
            self.student.train(was_training)
        return s_shapes, t_shapes

    # --- the loss ------------------------------------------------------------------------------
    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        with self._hooked() as hooks:
            self._current = hooks
            try:
                return super().training_losses(x, y)
            finally:
                self._current = None

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        if self._current is None:
            raise RuntimeError("extra_losses is only available inside training_losses")
        s_hooks, t_hooks = self._current
        return self.feature_losses(self._collect(s_hooks, "student"), self._collect(t_hooks, "teacher"))


class EmbeddingDistillationModule(FeatureDistillationModule):
    """A feature method on each model's penultimate embedding by default: the *input* of its
    classifier (``BuiltModel.classifier``; RepDistiller ``feat[-1]``): CC, CRD, PKT, RKD share
    this layer choice, and CC and CRD the linear heads of :meth:`embedding_heads`."""

    @classmethod
    def default_layers(cls, model: BuiltModel) -> tuple[list[str], bool]:
        """The classifier's input, the penultimate embedding (RepDistiller ``feat[-1]``)."""
        return ([model.classifier] if model.classifier else []), True

    def embedding_heads(self, dim: int, normalize: bool = True) -> tuple[Embed, Embed]:
        """Linear heads ``g_s``, ``g_t`` from the first student and teacher feature (flattened)
        to ``dim`` (:class:`kdexp.connectors.Embed`), built student first."""
        g_s, g_t = (Embed(math.prod(shapes[0][1:]), dim, normalize=normalize) for shapes in self.feature_shapes)
        return g_s, g_t


def describe_pairs(student_shapes: list[Shape], teacher_shapes: list[Shape]) -> str:
    """``(2, 16, 32, 32) -> (2, 64, 32, 32), ...`` for error messages."""
    return ", ".join(f"{s} -> {t}" for s, t in zip(student_shapes, teacher_shapes))
