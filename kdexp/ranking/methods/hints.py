"""``hints``: FitNets hints on the hidden MLP layers (iQIYI's double DNN: the student imitates the
teacher's hidden activations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdexp.losses import hint_loss
from kdexp.methods.options import at_least, weight
from kdexp.ranking.methods.base import RankingMethod, register_ranking_method


def hidden_index(role: str, model: Any, name: str) -> int:
    """The position of stage ``name`` among a ranker's hidden layers (ValueError naming the stages)."""
    hidden = [s for s in model.stages if s.startswith("hidden")]
    if name not in hidden:
        raise ValueError(
            f"method.{role}_layers names {name!r}, which {role}={model.ranker_name} does not have; its hidden MLP "
            f"layers are: {', '.join(hidden) or 'none (hints needs a ranker with an MLP: deep_ranker, mlp_ranker)'}"
        )
    return hidden.index(name)


@register_ranking_method("hints")
class HintsRanking(RankingMethod):
    """loss = ce_weight · own(s) + kd_weight · listwise(s, t) + hint_weight · Σ mean (r(h_s) - h_t)²

    over the guided pairs (h_s, h_t) of hidden-layer activations on the candidate lists; r a
    Linear regressor to the teacher's width (+ ReLU, ``regressor_relu``), trained with the student.
    ``student_layers``/``teacher_layers`` null: each ranker's first hidden layer (its second
    declared stage, as image hints take). ``hint_epochs = N > 0``: the paper's two stages (hint
    alone for epochs < N, then own + KD with the regressors frozen; ``kd_weight_end``: KD weight
    decays linearly to it). The options and their defaults are the image method's
    (configs/method/hints.yaml: hint_weight 100, RepDistiller's)."""

    @dataclass
    class Options(RankingMethod.Options):
        student_layers: list[str] | None = None
        teacher_layers: list[str] | None = None
        hint_weight: float = weight(100.0)
        hint_epochs: int = at_least(0, 0, "epochs of the hint stage (0: one stage)")
        kd_weight_end: float | None = weight(None)
        regressor_relu: bool = True

    @classmethod
    def layers(cls, options: Any, student: Any, teacher: Any) -> list[tuple[int, int]]:
        s_names = options.student_layers or [s for s in student.stages if s.startswith("hidden")][:1] or ["hidden1"]
        t_names = options.teacher_layers or [s for s in teacher.stages if s.startswith("hidden")][:1] or ["hidden1"]
        if len(s_names) != len(t_names):
            raise ValueError(f"method.student_layers {s_names} and method.teacher_layers {t_names} must have the same length")
        return [(hidden_index("student", student, s), hidden_index("teacher", teacher, t)) for s, t in zip(s_names, t_names)]

    @classmethod
    def check_models(cls, options: Any, student: Any, teacher: Any, data: Any) -> list[str]:
        cls.layers(options, student, teacher)
        return super().check_models(options, student, teacher, data)

    def __init__(self, options: Any, student: Any, teacher: Any, data: Any) -> None:
        super().__init__(options, student, teacher, data)
        self.pairs = self.layers(options, student, teacher)
        probe_u, probe_i = torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)
        with torch.no_grad():
            hs, ht = student.scores(probe_u, probe_i)[1], teacher.scores(probe_u, probe_i)[1]
        self.regressors = nn.ModuleList(
            nn.Sequential(nn.Linear(hs[s].shape[-1], ht[t].shape[-1]), *([nn.ReLU()] if options.regressor_relu else []))
            for s, t in self.pairs
        )

    def kd_weight_now(self) -> float:
        o = self.options
        if o.kd_weight_end is None or self.max_epochs - 1 <= o.hint_epochs:
            return o.kd_weight
        done = (self.epoch - o.hint_epochs) / (self.max_epochs - 1 - o.hint_epochs)
        return o.kd_weight + (o.kd_weight_end - o.kd_weight) * min(max(done, 0.0), 1.0)

    def start_epoch(self, epoch: int, max_epochs: int) -> None:
        super().start_epoch(epoch, max_epochs)
        if self.options.hint_epochs and epoch == self.options.hint_epochs:
            self.regressors.requires_grad_(False)

    def loss(self, users: Tensor, items: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        listed = self.with_extra_items(items) if o.kd_weight > 0 else items
        scores, hidden = self.student.scores(users, listed)
        own = self.own_loss(scores[:, : items.shape[1]])
        terms: dict[str, Tensor] = {"own": own}
        hint_stage = self.epoch < o.hint_epochs
        if hint_stage or not o.hint_epochs:
            with torch.no_grad():
                teacher_hidden = self.teacher.scores(users, listed)[1]
            hint = sum(hint_loss(r(hidden[s]), teacher_hidden[t]) for r, (s, t) in zip(self.regressors, self.pairs))
            terms["hint"] = hint
            if hint_stage:
                return o.hint_weight * hint, terms
        total = o.ce_weight * own + (o.hint_weight * terms["hint"] if "hint" in terms else 0.0)
        if o.kd_weight > 0:
            distill = self.distill(users, listed, scores)
            terms["kd"] = distill
            total = total + self.kd_weight_now() * distill
        return total, terms
