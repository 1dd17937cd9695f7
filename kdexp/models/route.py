"""A teacher's route (RCO): its anchor points as one module, of which one runs at a time. A plain
``nn.Module``, so checkpoints, the teacher room and the saved student all rebuild it alike."""

from __future__ import annotations

from torch import Tensor, nn


class AnchorRoute(nn.Module):
    """A teacher's anchor points, easiest first; ``forward`` runs the active anchor only.

    ``labels[i]`` names anchor i (``epoch 2``, or the checkpoint path it was loaded from).
    """

    def __init__(self, anchors: list[nn.Module], labels: list[str], epochs: list[int | None]) -> None:
        super().__init__()
        if not anchors:
            raise ValueError("a teacher route needs at least one anchor")
        self.anchors = nn.ModuleList(anchors)
        self.labels, self.epochs = list(labels), list(epochs)
        self.active = len(anchors) - 1  # the converged teacher unless a schedule says otherwise

    def forward(self, x: Tensor) -> Tensor:
        return self.anchors[self.active](x)
