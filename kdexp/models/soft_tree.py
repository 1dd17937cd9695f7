"""Soft decision tree student (Frosst & Hinton 2017, "Distilling a Neural Network Into a Soft
Decision Tree").

A complete binary tree of ``depth`` levels of inner nodes over the flattened input x ∈ R^D:

* inner node i (N = 2^depth − 1 of them) is a logistic regression with a learned inverse
  temperature β shared by the tree: p_i(x) = σ(β · (w_i·x + b_i)), the probability of taking the
  right branch;
* leaf ℓ (L = 2^depth of them) holds a learned class distribution Q^ℓ = softmax(φ^ℓ);
* the path probability P^ℓ(x) is the product of the branch probabilities from the root to ℓ
  (Σ_ℓ P^ℓ(x) = 1).

Training loss for target distributions T (one-hot labels, or a teacher's soft targets):

    L(x) = Σ_ℓ P^ℓ(x) · Σ_k −T_k log Q^ℓ_k            (path-weighted cross-entropy over leaves)

plus the paper's regulariser, which pushes every inner node to use both subtrees:

    C = −λ Σ_i 2^{−d(i)} · ½ (log α_i + log(1 − α_i)),   α_i = Σ_x P^i(x) p_i(x) / Σ_x P^i(x)

with P^i(x) the probability of reaching node i, d(i) its depth (root: 0) and α_i averaged over the
batch. The paper gives no value for λ; the default 1e-3 is that of the widely used
xuyxu/Soft-Decision-Tree implementation.

Prediction (``prediction``): ``max_path`` (the paper's) — the distribution of the leaf with the
greatest path probability; or ``mixture`` — Σ_ℓ P^ℓ Q^ℓ. The forward pass returns the log of that
distribution, which serves as logits (softmax and argmax give back the distribution and the class).

Cost (batch 1): the inner nodes are one D→N linear layer, D·N MACs, which
``torch.utils.flop_counter`` counts; the mixture adds L·K MACs (a matmul, also counted). The path
products (about 2L multiplications) are elementwise and, as for every model here, not counted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdexp.models.registry import register_model

PREDICTIONS = ("max_path", "mixture")
# Bytes of training memory per parameter: weights, gradients, optimizer momentum, one spare copy.
_BYTES_PER_PARAM = 16


@dataclass
class Routing:
    """One batch's way through the tree."""

    right: Tensor  # [B, N] p_i(x): probability of the right branch at inner node i (breadth-first)
    reach: Tensor  # [B, N] P^i(x): probability of reaching inner node i
    path: Tensor  # [B, L] P^ℓ(x): path probability of leaf ℓ (rows sum to 1)


def check_tree_size(depth: int, input_dim: int, num_classes: int, memory_bytes: int | None = None) -> None:
    """ValueError naming ``student.depth`` when the tree is not an integer depth >= 1 or its
    training memory (~16 bytes per parameter) exceeds the machine's physical memory."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"student.depth must be an integer >= 1 (levels of inner nodes), got {depth!r}")
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def params(d: int) -> int:
        return (2**d - 1) * (input_dim + 1) + 2**d * num_classes + 1

    need = params(depth) * _BYTES_PER_PARAM
    if need > memory_bytes:
        fits = max((d for d in range(1, 64) if params(d) * _BYTES_PER_PARAM <= memory_bytes), default=0)
        raise ValueError(
            f"student.depth={depth} does not fit in memory: a depth-{depth} tree on {input_dim} inputs "
            f"has {params(depth):,} parameters, about {need / 2**30:.1f} GiB to train, and this machine "
            f"has {memory_bytes / 2**30:.1f} GiB; choose student.depth <= {fits} (the paper uses 8 for 28x28)"
        )


class SoftDecisionTree(nn.Module):
    """Soft decision tree over flattened inputs of ``input_shape`` (C, H, W); see the module doc."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        depth: int = 8,
        penalty_strength: float = 1e-3,
        prediction: str = "max_path",
    ) -> None:
        super().__init__()
        input_dim = math.prod(input_shape)
        check_tree_size(depth, input_dim, num_classes)
        if prediction not in PREDICTIONS:
            raise ValueError(f"student.prediction={prediction!r} is unknown; choose one of: {', '.join(PREDICTIONS)}")
        if not penalty_strength >= 0:
            raise ValueError(f"student.penalty_strength must be >= 0 (λ of the regulariser), got {penalty_strength!r}")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.depth, self.num_classes = depth, num_classes
        self.penalty_strength, self.prediction = float(penalty_strength), prediction
        self.inner = nn.Linear(input_dim, 2**depth - 1)  # all inner nodes' filters, breadth-first
        self.beta = nn.Parameter(torch.ones(()))  # learned inverse temperature of the filters
        self.leaves = nn.Parameter(torch.randn(2**depth, num_classes) * 0.1)  # φ: leaf logits
        # λ·2^-d(i) for each inner node, breadth-first (node i is at depth floor(log2(i+1))).
        node_depth = torch.tensor([(i + 1).bit_length() - 1 for i in range(2**depth - 1)])
        self.register_buffer("node_weight", penalty_strength * 2.0 ** (-node_depth.float()), persistent=False)

    # --- routing -----------------------------------------------------------------------------
    def route(self, x: Tensor) -> Routing:
        """Branch, reach and path probabilities for a batch ``x`` of shape [B, *input_shape]."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"soft_tree was built for inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}"
            )
        right = torch.sigmoid(self.beta * self.inner(x.flatten(1)))
        level_path = right.new_ones(x.shape[0], 1)
        reach = []
        for level in range(self.depth):
            p = right[:, 2**level - 1 : 2 ** (level + 1) - 1]  # this level's nodes, left to right
            reach.append(level_path)
            # children of node j are 2j (left, 1 − p) and 2j+1 (right, p) on the next level
            level_path = torch.stack((level_path * (1 - p), level_path * p), dim=2).flatten(1)
        return Routing(right=right, reach=torch.cat(reach, dim=1), path=level_path)

    def leaf_log_probs(self) -> Tensor:
        """log Q: [L, K] log class distribution held by each leaf."""
        return F.log_softmax(self.leaves, dim=1)

    def predict_log_probs(self, routing: Routing) -> Tensor:
        """[B, K] log-probabilities: the max-path leaf's distribution, or the mixture over leaves."""
        log_q = self.leaf_log_probs()
        if self.prediction == "mixture":
            return torch.log(routing.path @ log_q.exp() + 1e-12)
        return log_q[routing.path.argmax(dim=1)]

    def forward(self, x: Tensor) -> Tensor:
        return self.predict_log_probs(self.route(x))

    # --- training ----------------------------------------------------------------------------
    def target_loss(self, routing: Routing, targets: Tensor) -> Tensor:
        """Batch mean of Σ_ℓ P^ℓ(x) Σ_k −T_k log Q^ℓ_k for target distributions ``targets`` [B, K]."""
        leaf_ce = -(targets.to(self.leaves.dtype) @ self.leaf_log_probs().T)  # [B, L]
        return (routing.path * leaf_ce).sum(dim=1).mean()

    def penalty(self, routing: Routing, eps: float = 1e-6) -> Tensor:
        """C = −Σ_i λ 2^{−d(i)} · ½ (log α_i + log(1 − α_i)), α_i over the batch."""
        alpha = (routing.reach * routing.right).sum(0) / routing.reach.sum(0).clamp_min(eps)
        alpha = alpha.clamp(eps, 1 - eps)
        return -(self.node_weight * 0.5 * (alpha.log() + (1 - alpha).log())).sum()

    def target_losses(self, x: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The hook ``DistillationModule`` trains a tree through: the tree's loss against each named
        target distribution (e.g. ``ce``: one-hot labels, ``kd``: the teacher's soft targets), plus
        ``tree_penalty``; and the prediction logits."""
        routing = self.route(x)
        losses = {name: self.target_loss(routing, t) for name, t in targets.items()}
        losses["tree_penalty"] = self.penalty(routing)
        return self.predict_log_probs(routing), losses


@register_model("soft_tree", stages=[], classifier="inner")
def soft_tree(
    num_classes: int = 10,
    in_channels: int = 1,
    input_shape: tuple[int, int, int] | None = None,
    depth: int = 8,
    penalty_strength: float = 1e-3,
    prediction: str = "max_path",
) -> SoftDecisionTree:
    """A soft decision tree; ``input_shape`` defaults to (in_channels, 28, 28)."""
    shape = tuple(input_shape) if input_shape is not None else (in_channels, 28, 28)
    return SoftDecisionTree(shape, num_classes, depth, penalty_strength, prediction)
