"""``rco``: Route-Constrained Optimisation (Jin et al., ICCV 2019, "Knowledge Distillation via Route
Constrained Optimization").

A converged teacher is a hard target for a small student; RCO supervises the student with a
sequence of *anchor points* from the teacher's own training route (its checkpoints at chosen
epochs), easiest first and ending at the converged teacher. The anchors come from the teacher's
cache entry (``kdexp.teacher.route``) or from ``teacher.checkpoint=[a.pt,b.pt,...]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric

from kdexp.methods.base import DistillationModule, accuracy_metrics
from kdexp.methods.declarations import TeacherUse
from kdexp.methods.kd import KDModule
from kdexp.methods.options import at_least, option
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel

SCHEDULES = ("equal",)


def equal_interval_anchors(num_anchors: int, teacher_epochs: int) -> list[int]:
    """The paper's equal-epoch-interval strategy: anchor i (1-based) at teacher epoch
    round(i · E_t / n), so the last anchor is the converged teacher (epoch E_t)."""
    return [round(i * teacher_epochs / num_anchors) for i in range(1, num_anchors + 1)]


def anchor_index(epoch: int, num_anchors: int, student_epochs: int) -> int:
    """Which anchor (0-based) supervises student epoch ``epoch`` (0-based): the student's epochs
    are split into ``num_anchors`` equal shares, anchor k for epochs ⌈k·E/n⌉ … ⌈(k+1)·E/n⌉ − 1."""
    return min(num_anchors - 1, epoch * num_anchors // max(student_epochs, 1))


def anchor_spans(num_anchors: int, student_epochs: int) -> list[tuple[int, int]]:
    """(first, last) student epoch (0-based, inclusive) of each anchor."""
    spans = []
    for k in range(num_anchors):
        first = math.ceil(k * student_epochs / num_anchors)
        last = math.ceil((k + 1) * student_epochs / num_anchors) - 1
        spans.append((first, last))
    return spans


@register_method("rco")
class RCOModule(DistillationModule):
    """loss = ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(a_k/T) ‖ softmax(s/T)),

    a_k = the logits of the anchor that supervises the current epoch (Hinton KD against each anchor
    in turn, as in the paper; defaults the repository's KD recipe: T=4, 0.1 CE / 0.9 KD).
    Anchors are switched at the start of an epoch, a function of the epoch alone, so a resumed run
    continues on the right one. Each anchor has its own teacher-output cache: a new, empty cache at
    every switch, so one anchor's logits are never served for another.
    """

    @dataclass
    class Options(KDModule.Options):  # the repository's KD recipe: T=4, 0.1 CE / 0.9 KD
        anchors: list[int] | None = option(
            None, "teacher epochs, easiest first, e.g. [1,2,4]; null = num_anchors equally spaced", min_items=1
        )
        num_anchors: int = at_least(4, 1, "anchor i at teacher epoch round(i * E_t / n), the last = E_t")
        schedule: str = option(
            "equal", "the paper's equal-epoch-interval strategy; its greedy search is not implemented"
        )

        def __post_init__(self) -> None:
            if self.schedule not in SCHEDULES:
                raise ValueError(
                    f"method.schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)} (the paper's "
                    "equal-epoch-interval strategy; its greedy search is not implemented)"
                )

    teacher_use = TeacherUse(logits_only=True)  # each anchor is frozen and used through its logits only

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        route = teacher.module if teacher is not None else None
        if not hasattr(route, "anchors"):
            raise ValueError("method=rco needs the teacher's route (kdexp.models.route.AnchorRoute)")
        super().__init__(student, teacher, **kwargs)
        n, num_classes = len(route.anchors), kwargs["num_classes"]
        self.test_anchors = nn.ModuleList(accuracy_metrics(num_classes).clone(prefix=f"test/anchor{k}_") for k in range(n))
        self.test_anchor_agreement = nn.ModuleList(MeanMetric() for _ in range(n))
        self.cache_summaries: dict[int, dict[str, Any]] = {}
        self._cache_anchor: int | None = None
        self.switches: list[dict[str, int]] = []  # (student epoch, anchor) as they happened, this process

    @classmethod
    def route_epochs(cls, options: Any, teacher_cfg: dict[str, Any], student_epochs: int) -> list[int]:
        """The anchors' teacher epochs (``[]`` when ``teacher.checkpoint`` lists them); ValueError on
        an empty list, epochs the teacher never reached, or fewer student epochs than anchors."""
        options = cls.options_from(options)  # checks method.schedule
        anchors, given = options.anchors, teacher_cfg.get("checkpoint")
        if given:
            paths = [given] if isinstance(given, str) else list(given)
            if anchors is not None:
                raise ValueError(
                    "method.anchors names epochs of a teacher kdexp trains; with teacher.checkpoint "
                    f"= a list the checkpoints are the anchors ({len(paths)} given): set method.anchors=null"
                )
            cls._check_student_epochs(len(paths), student_epochs, "teacher.checkpoint")
            return []
        teacher_epochs = teacher_cfg.get("train", {}).get("max_epochs")
        if not isinstance(teacher_epochs, int) or teacher_epochs < 1:
            raise ValueError(
                f"method=rco takes anchors from the teacher's training route, so teacher.train.max_epochs "
                f"must be a positive integer, got {teacher_epochs!r}"
            )
        if anchors is None:
            n = options.num_anchors
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= teacher_epochs:
                raise ValueError(
                    f"method.num_anchors must be an integer from 1 to teacher.train.max_epochs="
                    f"{teacher_epochs} (one anchor per teacher epoch at most), got {n!r}"
                )
            epochs = equal_interval_anchors(n, teacher_epochs)
        else:
            if isinstance(anchors, (str, int)) or not list(anchors):
                raise ValueError(
                    "method.anchors must be a non-empty list of teacher epochs, easiest first (e.g. "
                    f"[1,2,{teacher_epochs}]), or null for method.num_anchors equally spaced ones; got {anchors!r}"
                )
            epochs = list(anchors)
            bad = [e for e in epochs if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= teacher_epochs]
            if bad:
                raise ValueError(
                    f"method.anchors={epochs} names epoch(s) {bad} that the teacher never reached: its "
                    f"route has epochs 1 to {teacher_epochs} (teacher.train.max_epochs)"
                )
            if any(b <= a for a, b in zip(epochs, epochs[1:])):
                raise ValueError(f"method.anchors={epochs} must be strictly increasing (easiest anchor first)")
        cls._check_student_epochs(len(epochs), student_epochs, "method.anchors")
        return epochs

    @staticmethod
    def _check_student_epochs(n: int, student_epochs: int, key: str) -> None:
        if student_epochs < n:
            raise ValueError(
                f"{key} gives {n} anchors but the student trains for trainer.max_epochs={student_epochs}: "
                "each anchor needs at least one epoch; use fewer anchors or more epochs"
            )

    # --- the schedule ---------------------------------------------------------------------------
    @property
    def route(self) -> nn.Module:
        """The teacher's AnchorRoute (kept, like any frozen teacher, outside the registered children)."""
        return self.teacher

    @property
    def anchor_count(self) -> int:
        return len(self.route.anchors)

    def current_anchor(self, epoch: int) -> int:
        return anchor_index(epoch, self.anchor_count, int(self.trainer.max_epochs or 1))

    def on_train_epoch_start(self) -> None:
        self.activate(self.current_anchor(self.current_epoch), self.current_epoch)

    def activate(self, k: int, epoch: int) -> None:
        """Make anchor ``k`` the teacher; a switch gives the teacher-output cache a fresh table."""
        if k != self.route.active or not self.switches:
            cache = self.teacher_outputs
            if cache is not None and self._cache_anchor not in (None, k):
                self.cache_summaries[self._cache_anchor] = cache.summary()
                cache.release()
                self.teacher_outputs = cache.renewed()
            self._cache_anchor = k  # whose logits the current table holds
            self.route.active = k
            self.switches.append({"student_epoch": epoch, "anchor": k})
            rank_zero_info(f"RCO: from epoch {epoch + 1} the student learns from anchor {k} ({self.route.labels[k]})")
        self.log("train/anchor", float(k))

    def on_test_start(self) -> None:
        super().on_test_start()
        self.route.active = self.anchor_count - 1  # the teacher's numbers: the converged anchor's

    # --- evaluation: the student against every anchor --------------------------------------------
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        x, y = batch
        student = self.student(x).argmax(1)
        for k, anchor in enumerate(self.route.anchors):
            logits = anchor(x).detach()
            self.test_anchors[k].update(logits, y)
            self.test_anchor_agreement[k].update((logits.argmax(1) == student).float())
            self.log_dict(self.test_anchors[k])
            self.log(f"test/anchor{k}_agreement", self.test_anchor_agreement[k])

    def report_models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.route.anchors[-1]}  # the converged teacher

    def summarize(self, results: dict[str, Any], test_metrics: dict[str, float], last_val: dict[str, Any]) -> None:
        """results["rco"]: which anchors supervised which student epochs, and each anchor's
        accuracy against the student's."""
        results.update(self.rco_results(test_metrics))

    def rco_results(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Which anchors supervised which student epochs, and each anchor's accuracy vs the student's."""
        epochs = int(self.trainer.max_epochs or 1)
        anchors = []
        for k, (first, last) in enumerate(anchor_spans(self.anchor_count, epochs)):
            entry: dict[str, Any] = {
                "anchor": k,
                "label": self.route.labels[k],
                "teacher_epoch": self.route.epochs[k],
                "student_epochs": [first + 1, last + 1],  # 1-based, inclusive
            }
            if f"test/anchor{k}_acc" in metrics:
                entry["acc_top1"] = float(metrics[f"test/anchor{k}_acc"])
                entry["student_agreement_top1"] = float(metrics[f"test/anchor{k}_agreement"])
            if k in self.cache_summaries:
                entry["teacher_cache"] = self.cache_summaries[k]
            elif k == self._cache_anchor and self.teacher_outputs is not None:
                entry["teacher_cache"] = self.teacher_outputs.summary()  # the last anchor's own
            anchors.append(entry)
        student = metrics.get("test/student_acc")
        return {
            "rco": {
                "schedule": self.schedule,
                "anchors": anchors,
                "switches": self.switches,
                **({"student_acc_top1": float(student)} if student is not None else {}),
            }
        }
