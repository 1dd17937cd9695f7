"""``task=classification`` (the default): image classification, run by the run layer's own
Lightning flow with the methods of kdexp.methods."""

from __future__ import annotations

from kdexp.methods import choose_method
from kdexp.tasks import Task, register_task

register_task(Task("classification", choose_method=choose_method))
