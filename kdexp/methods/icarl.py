"""``icarl``: iCaRL (Rebuffi et al., CVPR 2017), one step's representation learning.

The rest of iCaRL lives in the run (``kdexp.incremental``): the exemplar memory (a fixed total
``incremental.memory``, balanced across classes, chosen by herding) joins every step's data, and
the nearest-mean-of-exemplars classifier is evaluated beside the network's own head.
"""

from __future__ import annotations

from torch import Tensor

from kdexp.methods.incremental_losses import icarl_bce
from kdexp.methods.class_incremental import IncrementalModule
from kdexp.methods.registry import register_method


@register_method("icarl")
class ICaRLModule(IncrementalModule):
    """loss = BCE(σ(s), q): q = one-hot on the new classes, σ(previous model's logits) on the
    old ones (``kdexp.methods.incremental_losses.icarl_bce``), over new images and exemplars alike."""

    uses_memory = True

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.teacher_logits(x) if self.teacher is not None else None
        logits = self.student(x)
        return logits, {"bce": (1.0, icarl_bce(logits, y, teacher_logits))}
