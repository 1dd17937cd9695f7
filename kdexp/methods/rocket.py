"""``rocket``: Rocket Launching (Zhou et al., AAAI 2018) — a light net and a booster net trained
together from scratch, the booster guiding the light net all the way.

The booster is this run's *teacher*, but unlike every other method's teacher it is trainable: it is
a registered child of the module, so it is in the optimizer, in the Lightning checkpoint and in the
DDP wrapper, and it stays in train mode. The run layer reads ``teacher_use.trained_with_student``
and builds it fresh (or from ``teacher.checkpoint`` as an initialisation) instead of a frozen,
cached teacher.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.options import at_least, option, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel


def rocket_hint_loss(light_logits: Tensor, booster_logits: Tensor, gradient_block: bool = True) -> Tensor:
    """The hint loss: mean squared error of the logits (before softmax), ‖l(x) − z(x)‖²₂ / C
    averaged over the batch (C classes). ``gradient_block``: z is a constant here, so the hint
    moves only the light net (and, through it, any shared lower layers).

    The mean over classes, not the sum: with the sum and λ = 1 the default Fashion-MNIST run
    diverged (the light net's logits reached 1e17 at SGD lr 0.1), and the mean keeps one λ
    meaningful across class counts."""
    target = booster_logits.detach() if gradient_block else booster_logits
    return F.mse_loss(light_logits, target)


def share_stages(light: BuiltModel, booster: BuiltModel, count: int, input_shape: tuple[int, ...]) -> list[str]:
    """Make the light net use the booster's ``count`` lowest stages (the same module objects).

    Returns the light net's stage paths that are now shared. Raises ValueError when the two nets
    do not declare enough stages or the light net cannot take the booster's stage outputs.
    """
    if count == 0:
        return []
    if count > min(len(light.stages), len(booster.stages)) - 1:
        raise ValueError(
            f"method.shared_stages={count}: the light net {light.name!r} declares {len(light.stages)} "
            f"stages and the booster {booster.name!r} {len(booster.stages)}; at most "
            f"{min(len(light.stages), len(booster.stages)) - 1} lower stages can be shared (each net "
            "keeps at least its top stage)"
        )
    shared = []
    for light_path, booster_path in zip(light.stages[:count], booster.stages[:count]):
        parent_path, _, name = light_path.rpartition(".")
        parent = light.module.get_submodule(parent_path) if parent_path else light.module
        setattr(parent, name, booster.module.get_submodule(booster_path))
        shared.append(light_path)
    try:
        with torch.no_grad():
            was_training = light.module.training
            light.module.eval()
            light.module(torch.zeros(2, *input_shape))
            light.module.train(was_training)
    except RuntimeError as err:
        raise ValueError(
            f"method.shared_stages={count}: the light net {light.name!r} cannot run on the booster "
            f"{booster.name!r}'s lower stages {list(booster.stages[:count])} (shared stages need a "
            f"same-family pair whose stage widths agree, e.g. cnn_medium with cnn_large): "
            f"{str(err).splitlines()[0]}"
        ) from None
    return shared


@register_method("rocket")
class RocketModule(DistillationModule):
    """loss = ce_weight · CE(l, y) + booster_ce_weight · CE(z, y) + hint_weight · ‖l − sg(z)‖²₂ / C

    (Zhou et al. 2018, Eq. 1 with the gradient block): l and z are the light net's and the
    booster's logits, sg stops the gradient, so the booster learns from the labels only while the
    light net learns from the labels and the booster. With ``shared_stages`` = k > 0 the light net
    uses the booster's k lowest stages, which then receive the gradients of all three terms
    (the hint's through the light net's branch).
    """

    @dataclass
    class Options(DistillationModule.Options):
        ce_weight: float = weight(1.0, search=(0.0, 1.0))  # the light net's CE (Eq. 1: 1)
        kd_weight: float = weight(0.0, "rocket has no Hinton term: the hint (hint_weight) is its teacher signal")
        booster_ce_weight: float = weight(1.0)  # the booster's CE (Eq. 1: 1)
        hint_weight: float = weight(1.0, search=(0.1, 10.0, "log"))  # lambda
        shared_stages: int = at_least(0, 0, "the booster's lowest stages the light net uses; 0 = none")
        gradient_block: bool = option(True, "false: the hint also pulls the booster towards the light net (ablation)")

        def __post_init__(self) -> None:
            if self.kd_weight > 0:
                raise ValueError(
                    f"method.kd_weight={self.kd_weight}: rocket has no Hinton KD term; the light net learns "
                    "from the booster through the hint (method.hint_weight)"
                )
            if self.logit_standardization:
                raise ValueError(
                    "method.logit_standardization=true: rocket's hint is the mean squared error of the raw "
                    "logits (the paper's), with no temperature softmax to standardise for"
                )

    teacher_use = TeacherUse(trained_with_student=True)  # the run layer builds a fresh, trainable booster, never a cached one

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        if teacher is None:
            raise ValueError("method=rocket needs a booster net: set teacher=<model name>")
        count = self.options_in(kwargs).shared_stages
        shared = share_stages(student, teacher, count, tuple(kwargs["input_shape"]))
        super().__init__(student, teacher, **kwargs)
        # The booster is a registered child: optimizer, checkpoint, DDP; not the base's frozen box.
        self._teacher_box = []
        self.booster = teacher.module.train().requires_grad_(True)
        self.shared = shared

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, options: Any) -> None:
        """Shared stages must fit, checked on copies of the bare architectures before training."""
        count = cls.options_from(options).shared_stages
        if teacher is not None and count > 0:
            light, booster = copy.deepcopy(student), copy.deepcopy(teacher)
            share_stages(light, booster, count, _probe_shape(light.module))

    # The booster trains: it is neither frozen, nor kept in eval mode, nor run without gradients.
    @property
    def teacher(self) -> nn.Module | None:
        return self.booster if "booster" in self._modules else None

    def _place_teacher(self) -> None:
        pass  # a child module: Lightning moves it with the rest

    def train(self, mode: bool = True) -> RocketModule:
        nn.Module.train(self, mode)
        return self

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        booster_logits = self.booster(x)
        logits = self.student(x)
        terms = {
            "ce": (self.ce_weight, F.cross_entropy(logits, y)),
            "booster_ce": (self.booster_ce_weight, F.cross_entropy(booster_logits, y)),
            "hint": (self.hint_weight, rocket_hint_loss(logits, booster_logits, self.gradient_block)),
        }
        if self.logs_this_step():
            self.log("train/booster_acc", (booster_logits.argmax(1) == y).float().mean())
        return logits, terms

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        x, y = batch
        self.log("val/booster_acc", (self.booster(x).argmax(1) == y).float().mean())

    def summarize(self, results: dict[str, Any], test_metrics: dict[str, float], last_val: dict[str, Any]) -> None:
        """The report says the teacher (booster) was trained jointly, and how."""
        results["rocket"] = {
            "teacher_trained_jointly": True, "shared_stages": self.shared, "gradient_block": self.gradient_block
        }


def _probe_shape(module: nn.Module) -> tuple[int, int, int]:
    """An input shape to probe a model with: its first conv's channels, 28x28 for one channel
    (Fashion-MNIST) and 32x32 otherwise (stage widths, not the image size, decide sharing)."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    return (channels, 28, 28) if channels == 1 else (channels, 32, 32)
