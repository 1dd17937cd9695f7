"""What every ranking method shares: the student's own loss on sampled negatives (BPR or BCE),
the distillation term's weight, and the declarations the run layer reads (``teacher_use``,
``chain``, ``requires_teacher``), as kdexp.methods.base.DistillationModule declares them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from kdexp.methods.declarations import Chain, TeacherUse
from kdexp.methods.options import at_least, positive, weight
from kdexp.ranking.losses import OWN_LOSSES, listwise_loss
from kdexp.ranking.models import count_params, score_all
from kdexp.registry import Registry

RANKING_METHODS: Registry[type] = Registry("ranking method", key="method.name")


def register_ranking_method(name: str):
    """Class decorator: ``task=ranking method=<name>`` selects the class (``cls.method_name``)."""

    def decorator(cls: type) -> type:
        cls.method_name = name
        return RANKING_METHODS.register(name)(cls)

    return decorator


class RankingMethod(nn.Module):
    """A student ranker's training objective. Per step, for users (B,) and their candidates
    (B, 1+n: the positive, then n sampled negatives):

        loss = ce_weight · own(s) + kd_weight · distill(...)

    ``own`` is BPR or BCE (``loss``); ``distill`` is each method's (here: the listwise KL over the
    candidates and ``list_items`` more sampled items). The module holds only what the method trains
    beside the student (regressors); the student and the teacher are plain attributes."""

    method_name: ClassVar[str] = ""
    teacher_use: ClassVar[TeacherUse] = TeacherUse(needed=True)
    chain: ClassVar[Chain | None] = None
    members_field: ClassVar[str | None] = None

    @dataclass
    class Options:
        loss: str = "bpr"  # the student's own loss: bpr (Rendle et al. 2009) | bce (NCF's sampled-negative BCE)
        negatives: int = at_least(4, 1, "sampled negatives per positive (NCF samples 4)")
        ce_weight: float = weight(1.0)  # the student's own loss (the image methods' name for it)
        kd_weight: float = weight(0.0)
        temperature: float = positive(1.0, "the softmax temperature of score distillation")
        logit_standardization: bool = False  # z-score both lists' scores before the softmax (listwise terms)
        list_items: int = at_least(20, 0, "extra uniformly sampled items per list that both models score")

        def __post_init__(self) -> None:
            if self.loss not in OWN_LOSSES:
                raise ValueError(f"method.loss={self.loss!r} is unknown; choose one of: {', '.join(OWN_LOSSES)}")

    def __init__(self, options: Any, student: nn.Module, teacher: nn.Module | None, data: Any) -> None:
        super().__init__()
        self.options = options
        object.__setattr__(self, "student", student)  # not submodules: the loop owns their parameters
        object.__setattr__(self, "teacher", teacher)
        self.data, self.n_items = data, data.n_items
        self.epoch, self.max_epochs = 0, 1

    # --- declarations read by the run layer and the loop ---------------------------------------
    @classmethod
    def requires_teacher(cls, options: Any) -> bool:
        return cls.teacher_use.needed and not cls.teacher_use.trained_with_student

    @classmethod
    def check_models(cls, options: Any, student: nn.Module, teacher: nn.Module | None, data: Any) -> list[str]:
        """ValueErrors for models or options this method cannot use; returns warnings."""
        warnings = []
        listwise = cls.distill is RankingMethod.distill and options.kd_weight > 0
        if options.logit_standardization and not listwise:
            raise ValueError(
                f"method.logit_standardization=true changes nothing for method={cls.method_name}: it z-scores the "
                "scores of a softmax over a list (method=listwise, or kd_weight > 0); leave it false"
            )
        if teacher is not None and count_params(student) > count_params(teacher):
            warnings.append(
                f"the student ({count_params(student):,} parameters) is larger than the teacher "
                f"({count_params(teacher):,}): allowed, but a distilled student is usually the smaller one"
            )
        return warnings

    def start_epoch(self, epoch: int, max_epochs: int) -> None:
        """Called before each epoch (RD recomputes the student's ranks after its warm-up)."""
        self.epoch, self.max_epochs = epoch, max_epochs

    # --- the loss --------------------------------------------------------------------------------
    def own_loss(self, scores: Tensor) -> Tensor:
        return OWN_LOSSES[self.options.loss](scores)

    def teacher_scores(self, users: Tensor, items: Tensor) -> Tensor:
        with torch.no_grad():  # frozen teacher: never in the graph
            return self.teacher(users, items)

    def teacher_top(self, k: int) -> Tensor:
        """Each user's ``k`` best items by the teacher, its training positives excluded (n_users, k);
        computed once (the teacher is frozen)."""
        if getattr(self, "_teacher_top", None) is None or self._teacher_top.shape[1] != k:
            scores = score_all(self.teacher, self.data.n_users, self.n_items)
            self._teacher_top = scores.masked_fill(self.data.train_mask, float("-inf")).topk(k, dim=1).indices
        return self._teacher_top

    def with_extra_items(self, items: Tensor) -> Tensor:
        extra = torch.randint(0, self.n_items, (items.shape[0], self.options.list_items), device=items.device)
        return torch.cat([items, extra], dim=1)

    def loss(self, users: Tensor, items: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's loss and its terms (for the logs). Default: own loss (+ the listwise term if
        ``kd_weight > 0``)."""
        listed = self.with_extra_items(items) if self.options.kd_weight > 0 else items
        scores = self.student(users, listed)
        own = self.own_loss(scores[:, : items.shape[1]])
        terms = {"own": own}
        total = self.options.ce_weight * own
        if self.options.kd_weight > 0:
            distill = self.distill(users, listed, scores)
            terms["kd"] = distill
            total = total + self.options.kd_weight * distill
        return total, terms

    def distill(self, users: Tensor, items: Tensor, scores: Tensor) -> Tensor:
        """The distillation term on the lists ``items`` the student scored ``scores``."""
        teacher = self.teacher_scores(users, items)
        if self.options.logit_standardization:
            from kdexp.losses import standardize_logits

            scores, teacher = standardize_logits(scores), standardize_logits(teacher)
        return listwise_loss(scores, teacher, self.options.temperature)


class TopKDistillation(RankingMethod):
    """A method whose term reads the teacher's top ``options.topk`` items of each user in the batch
    (RD, RRD): the student's own loss on the batch, plus ``kd_weight · distill_top(users, top)``."""

    def loss(self, users: Tensor, items: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        own = self.own_loss(self.student(users, items))
        total, terms = self.options.ce_weight * own, {"own": own}
        if self.options.kd_weight > 0:
            distinct = torch.unique(users)
            top = self.teacher_top(self.options.topk)[distinct.cpu()].to(users.device)
            terms["kd"] = self.distill_top(distinct, top)
            total = total + self.options.kd_weight * terms["kd"]
        return total, terms

    def distill_top(self, users: Tensor, top: Tensor) -> Tensor:
        """The term on ``users`` (each once) and their teacher's top items ``top`` (users, K)."""
        raise NotImplementedError
