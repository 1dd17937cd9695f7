"""Ranking losses, each a formula on scores. Where a formula is an image method's, it is that
function (kdexp.losses): the listwise term is Hinton's KD over a candidate list, the pointwise MSE
and the hint are FitNets' mean squared error."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdexp.losses import hint_loss, kd_loss


def bpr_loss(scores: Tensor) -> Tensor:
    """BPR (Rendle et al. 2009): mean over negatives of -log σ(s_pos - s_neg); ``scores`` (B, 1+n),
    the positive first."""
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


def bce_loss(scores: Tensor) -> Tensor:
    """Pointwise BCE with sampled negatives (NCF): the positive's label 1, the negatives' 0, mean
    over all (B, 1+n) scores (logits)."""
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(scores, labels)


OWN_LOSSES = {"bpr": bpr_loss, "bce": bce_loss}


def pointwise_loss(student: Tensor, teacher: Tensor, kind: str = "mse") -> Tensor:
    """Score distillation item by item: ``mse`` = mean (s - t)^2 (kdexp.losses.hint_loss's
    formula), ``bce`` = BCE(σ(s), σ(t)) (the teacher's click probability as a soft label)."""
    if kind == "mse":
        return hint_loss(student, teacher)
    return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher.detach()))


def pairwise_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """The teacher's preference on every item pair (a, b) of each list as a soft label:
    BCE(σ((s_a - s_b)/T), σ((t_a - t_b)/T)), mean over the pairs a < b (RankNet on soft targets)."""
    n = student.shape[1]
    a, b = torch.triu_indices(n, n, offset=1, device=student.device)
    s = (student[:, a] - student[:, b]) / temperature
    t = (teacher[:, a] - teacher[:, b]).detach() / temperature
    return F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))


def listwise_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Softmax KL over each candidate list: T^2 · KL(softmax(t/T) || softmax(s/T)), batch mean
    (kdexp.losses.kd_loss: the lists are the classes)."""
    return kd_loss(student, teacher.detach(), temperature)


def position_weights(k: int, lam: float) -> Tensor:
    """RD's position importance: w_r ∝ exp(-r / λ) for ranks r = 1..K, normalised to sum 1."""
    w = torch.exp(-torch.arange(1, k + 1, dtype=torch.float32) / lam)
    return w / w.sum()


def discrepancy_weights(student_rank: Tensor, mu: float) -> Tensor:
    """RD's rank-discrepancy weight of each of the teacher's top-K items: tanh(max(μ · (r̂ - r), 0)),
    r̂ the item's 0-based rank in the student's list, r its rank in the teacher's; rows normalised to
    sum 1 (all-zero rows stay zero)."""
    k = student_rank.shape[1]
    gap = mu * (student_rank.float() - torch.arange(k, dtype=torch.float32, device=student_rank.device))
    w = torch.tanh(gap.clamp(min=0))
    return w / w.sum(1, keepdim=True).clamp(min=1e-12)


def rd_loss(student_top: Tensor, weights: Tensor) -> Tensor:
    """Ranking Distillation (Tang & Wang, KDD 2018): the teacher's top-K items as extra positives,
    -Σ_r w_r log σ(s_r), mean over users; ``student_top`` (B, K) the student's scores of them."""
    return -(weights * F.logsigmoid(student_top)).sum(1).mean()


def rrd_loss(interesting: Tensor, uninteresting: Tensor) -> Tensor:
    """Relaxed ranking distillation (Kang et al., CIKM 2020): the Plackett–Luce likelihood of the
    teacher's order of K interesting items (``interesting`` (B, K), the student's scores in the
    teacher's order) above L sampled uninteresting ones, whose own order is left free:
    -Σ_k [s_k - log(Σ_{j>=k} exp(s_j) + Σ_l exp(u_l))], mean over users."""
    rest = torch.logsumexp(uninteresting, dim=1, keepdim=True)
    # log Σ_{j>=k} exp(s_j): a reversed cumulative logsumexp
    tail = torch.logcumsumexp(interesting.flip(1), dim=1).flip(1)
    return -(interesting - torch.logaddexp(tail, rest)).sum(1).mean()
