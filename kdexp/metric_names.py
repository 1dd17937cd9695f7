"""The names of every logged metric, in one place: ``<stage>/[<role>_]<metric>``.

    metric_name("val")                      -> "val/acc"            (the student, validation)
    metric_name("test", "student")          -> "test/student_acc"
    metric_name("test", "teacher", "acc_top5") -> "test/teacher_acc_top5"
    metric_name("val", member_role(1))      -> "val/student1_acc"   (a cohort member)
    metric_name("train", "kd", "loss")      -> "train/kd_loss"      (a raw loss term)

Modules log under these names; the run layer, the sweeper's ``optimized_metric`` and reports
read them back with :func:`accuracies`, so producer and readers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STAGES = ("train", "val", "test")


def metric_prefix(stage: str, role: str | None = None) -> str:
    """``"<stage>/"`` or ``"<stage>/<role>_"``: the prefix of a MetricCollection's names."""
    return f"{stage}/{role}_" if role else f"{stage}/"


def metric_name(stage: str, role: str | None = None, metric: str = "acc") -> str:
    """The full name of one logged metric (see the module notes)."""
    return metric_prefix(stage, role) + metric


def member_role(index: int) -> str:
    """The role of the ``index``-th of several students (a cohort): ``student<index>``."""
    return f"student{index}"


# results.json's accuracy fields and the metric each comes from.
ACCURACY_FIELDS = {"acc_top1": "acc", "acc_top5": "acc_top5"}


def accuracies(metrics: Mapping[str, Any], stage: str, role: str | None = None) -> dict[str, float]:
    """``{"acc_top1": ..., "acc_top5": ...}`` of one stage and role, from logged ``metrics``
    (the fields that are present)."""
    names = {field: metric_name(stage, role, metric) for field, metric in ACCURACY_FIELDS.items()}
    return {field: float(metrics[name]) for field, name in names.items() if name in metrics}
