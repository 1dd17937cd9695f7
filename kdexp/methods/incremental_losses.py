"""Loss terms of the class-incremental methods (pure functions of logits and labels).

Conventions: ``student`` logits (B, C_seen) with the old classes first, ``teacher`` logits
(B, C_old) of the previous step's model; labels are positions in the class order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lwf_distillation(student: Tensor, teacher: Tensor, temperature: float = 2.0) -> Tensor:
    """Learning without Forgetting's L_old (Li & Hoiem 2016, eq. 2), on the old classes only:

        −(1/B) Σ_b Σ_{c < C_old} softmax(t_b / T)_c · log softmax(s_b[:C_old] / T)_c

    the cross-entropy between the previous model's and the current model's softened outputs
    over the ``C_old = teacher.shape[1]`` old classes (T = 2 in the paper; no T² factor). The
    student's logits of new classes take no part."""
    old = teacher.shape[1]
    target = F.softmax(teacher.float() / temperature, dim=1)
    log_probs = F.log_softmax(student[:, :old].float() / temperature, dim=1)
    return -(target * log_probs).sum(1).mean()


def new_class_ce(student: Tensor, labels: Tensor, old: int) -> Tensor:
    """LwF's L_new: cross-entropy over the new classes' logits only (positions >= ``old``)."""
    return F.cross_entropy(student[:, old:], labels - old)


def icarl_bce(student: Tensor, labels: Tensor, teacher: Tensor | None) -> Tensor:
    """iCaRL's representation loss (Rebuffi et al. 2017, Algorithm 3): binary cross-entropy of
    sigmoid outputs against targets that are the one-hot label on the new classes and the
    previous model's sigmoid outputs σ(t) on the old classes (distillation), averaged over the
    batch and the C_seen classes:

        −(1/(B·C)) Σ_b Σ_y [ q_y log σ(s_y) + (1 − q_y) log(1 − σ(s_y)) ],
        q_y = σ(t_y) for y < C_old,  q_y = [y = label] otherwise."""
    targets = F.one_hot(labels, student.shape[1]).to(student.dtype)
    if teacher is not None and teacher.shape[1] > 0:
        targets = torch.cat([torch.sigmoid(teacher.to(student.dtype)), targets[:, teacher.shape[1] :]], dim=1)
    return F.binary_cross_entropy_with_logits(student, targets)
