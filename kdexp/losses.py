"""Pure loss functions of the distillation methods (no module state).

Conventions shared by every function here:

- The first argument is the *student* side (gradients flow into it); the second is the *target*
  side (teacher features, teacher logits or peer logits), which is always detached: no gradient
  ever reaches it, whatever its ``requires_grad``.
- Every function returns a 0-dim tensor. It is the *unweighted* term: the method module multiplies
  it by its configured weight. Each docstring names the published default weight (RepDistiller's
  CIFAR-100 recipe unless stated otherwise).
- Numerics: inputs in float16/bfloat16 are upcast to float32 and autocast is switched off inside the
  loss, so softmaxes, Gram matrices and pairwise distances are computed in (at least) float32 even
  under ``torch.autocast(dtype=torch.bfloat16)``. float64 inputs stay float64. The result has that
  computation dtype (float32 for float32/bf16/fp16 inputs); gradients flow back to the student in
  its own dtype.
- Bad inputs (mismatched shapes, empty lists, non-positive temperature ...) raise ``ValueError``
  (``TypeError`` for a tensor passed where a list is expected) with a message naming the function,
  the argument and the shapes involved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss",
    "hint_loss",
    "attention_map",
    "at_loss",
    "sp_loss",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "rkd_loss",
    "mutual_kl",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _full_precision(ref: Tensor) -> Iterator[None]:
    """Disable autocast for ``ref``'s device type inside the block (no-op where unsupported)."""
    device_type = ref.device.type
    is_available = getattr(torch.amp, "is_autocast_available", None)
    available = is_available(device_type) if is_available is not None else device_type in ("cpu", "cuda")
    if available:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """Common dtype of ``tensors``, at least float32 (bf16/fp16/integers are promoted)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in _LOW_PRECISION or not dtype.is_floating_point:
        dtype = torch.float32
    return dtype


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_same_shape(fn: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {a_name} has shape {_shape(a)} but {b_name} has shape {_shape(b)}; "
            "they must be identical."
        )


def _check_same_batch(fn: str, s: Tensor, t: Tensor) -> None:
    if s.dim() == 0 or t.dim() == 0 or s.shape[0] != t.shape[0]:
        raise ValueError(
            f"{fn}: student input has shape {_shape(s)} and teacher input has shape {_shape(t)}; "
            "both need the same batch size in dim 0."
        )


def _check_logits(fn: str, name: str, logits: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(
            f"{fn}: {name} must be 2-D (batch, classes), got shape {_shape(logits)}."
        )


def _check_temperature(fn: str, temperature: float) -> float:
    t = float(temperature)
    if not t > 0.0:
        raise ValueError(f"{fn}: temperature must be > 0, got {temperature!r}.")
    return t


def _check_tensor_list(fn: str, name: str, value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        raise TypeError(
            f"{fn}: {name} must be a list of tensors, got a single tensor of shape "
            f"{_shape(value)}; wrap it in a list."
        )
    if not isinstance(value, Sequence):
        raise TypeError(f"{fn}: {name} must be a list of tensors, got {type(value).__name__}.")
    return list(value)


# --------------------------------------------------------------------------------------------------
# KD (Hinton et al. 2015)
# --------------------------------------------------------------------------------------------------


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al. 2015 soft-target loss.

    ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``
    ``= T^2 / B * sum_b sum_c p_t[b,c] * (log p_t[b,c] - log p_s[b,c])``

    Reduction: 'batchmean' (sum over classes, mean over the batch B), as RepDistiller's
    ``DistillKL``. The ``T^2`` factor keeps gradient magnitudes comparable across temperatures.
    Returns the scaled KL term only; the method combines it as ``w_ce * CE + w_kd * kd_loss`` with
    published defaults ``w_ce=0.1, w_kd=0.9, T=4`` (RepDistiller CIFAR-100).

    Args:
        student_logits: (B, C) raw logits; receives gradients.
        teacher_logits: (B, C) raw logits; detached.
        temperature: T > 0.
    """
    fn = "kd_loss"
    _check_logits(fn, "student_logits", student_logits)
    _check_same_shape(fn, "student_logits", student_logits, "teacher_logits", teacher_logits)
    T = _check_temperature(fn, temperature)
    dtype = _compute_dtype(student_logits, teacher_logits)
    with _full_precision(student_logits):
        log_p_s = F.log_softmax(student_logits.to(dtype) / T, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach().to(dtype) / T, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return kl * (T * T)


# --------------------------------------------------------------------------------------------------
# FitNets (Romero et al. 2015)
# --------------------------------------------------------------------------------------------------


def hint_loss(student_feat_regressed: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al. 2015).

    ``mean((r(f_s) - f_t)^2)`` over *all* elements (batch, channels, positions), as RepDistiller's
    ``nn.MSELoss()``; ``r`` is the regressor (:class:`kdexp.connectors.HintRegressor`), applied by
    the caller. Published weight: 100 (RepDistiller CIFAR-100, hint layer 2).

    Args:
        student_feat_regressed: student feature already mapped to the teacher's shape; receives
            gradients.
        teacher_feat: teacher feature (same shape); detached.

    Raises:
        ValueError: if the shapes differ (the message names both).
    """
    _check_same_shape(
        "hint_loss", "student_feat_regressed", student_feat_regressed, "teacher_feat", teacher_feat
    )
    dtype = _compute_dtype(student_feat_regressed, teacher_feat)
    with _full_precision(student_feat_regressed):
        return F.mse_loss(student_feat_regressed.to(dtype), teacher_feat.detach().to(dtype))


# --------------------------------------------------------------------------------------------------
# Attention transfer (Zagoruyko & Komodakis 2017)
# --------------------------------------------------------------------------------------------------


def attention_map(feat: Tensor, p: float = 2) -> Tensor:
    """Spatial attention map of a feature map (Zagoruyko & Komodakis 2017).

    ``Q = normalize_L2( flatten( mean_c |f_c|^p ) )`` : (B, C, H, W) -> (B, H*W), each row of unit
    L2 norm (``F.normalize``, eps 1e-12, as the authors' code). Mean over channels (not sum) as in
    the reference code; the L2 normalisation makes the two equivalent anyway.
    """
    if feat.dim() != 4:
        raise ValueError(f"attention_map: feat must be 4-D (B, C, H, W), got shape {_shape(feat)}.")
    if not float(p) > 0.0:
        raise ValueError(f"attention_map: p must be > 0, got {p!r}.")
    dtype = _compute_dtype(feat)
    with _full_precision(feat):
        am = feat.to(dtype).abs().pow(p).mean(dim=1).flatten(1)
        return F.normalize(am, p=2.0, dim=1)


def at_loss(student_feats: list[Tensor], teacher_feats: list[Tensor], p: float = 2) -> Tensor:
    """Attention-transfer loss (Zagoruyko & Komodakis 2017).

    ``sum_j mean_{b, hw} (Q_s^j[b, hw] - Q_t^j[b, hw])^2`` with ``Q = attention_map(f, p)``.

    Reduction per pair: mean over batch *and* spatial positions, as the authors' reference code
    (``(at(x) - at(y)).pow(2).mean()``) and RepDistiller; summed over the pairs. The published
    weight ``beta = 1000`` is calibrated for this mean (p = 2).

    Spatial mismatch: the feature with the larger size is average-pooled
    (``F.adaptive_avg_pool2d``) to the smaller size *before* its attention map is computed
    (per axis: each map is pooled to ``(min(H_s, H_t), min(W_s, W_t))``). Channel counts may differ.

    Args:
        student_feats: list of (B, C_s, H, W) student features; receive gradients.
        teacher_feats: list of (B, C_t, H', W') teacher features, same length; detached.
        p: exponent of the attention map (paper: 2).
    """
    fn = "at_loss"
    s_list = _check_tensor_list(fn, "student_feats", student_feats)
    t_list = _check_tensor_list(fn, "teacher_feats", teacher_feats)
    if len(s_list) != len(t_list):
        raise ValueError(
            f"{fn}: student_feats has {len(s_list)} feature maps but teacher_feats has "
            f"{len(t_list)}; pass one teacher feature per student feature."
        )
    if not s_list:
        raise ValueError(f"{fn}: student_feats and teacher_feats are empty; pass at least one pair.")
    terms = []
    for i, (fs, ft) in enumerate(zip(s_list, t_list)):
        if fs.dim() != 4 or ft.dim() != 4 or fs.shape[0] != ft.shape[0]:
            raise ValueError(
                f"{fn}: pair {i}: student feature {_shape(fs)} and teacher feature {_shape(ft)} "
                "must both be 4-D (B, C, H, W) with the same batch size."
            )
        ft = ft.detach()
        dtype = _compute_dtype(fs, ft)
        with _full_precision(fs):
            fs, ft = fs.to(dtype), ft.to(dtype)
            size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
            if tuple(fs.shape[2:]) != size:
                fs = F.adaptive_avg_pool2d(fs, size)
            if tuple(ft.shape[2:]) != size:
                ft = F.adaptive_avg_pool2d(ft, size)
            terms.append((attention_map(fs, p) - attention_map(ft, p)).pow(2).mean())
    return torch.stack(terms).sum()


# --------------------------------------------------------------------------------------------------
# Similarity-preserving KD (Tung & Mori 2019)
# --------------------------------------------------------------------------------------------------


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Similarity-preserving loss (Tung & Mori 2019).

    ``F = reshape(f, (B, -1))``, ``G = normalize_rows(F F^T)`` (L2 per row),
    ``loss = ||G_s - G_t||_F^2 / B^2``.

    Reduction: sum of squared differences over the B x B matrix divided by B^2 (the paper's and
    RepDistiller's). Published weight ``gamma = 3000`` (RepDistiller CIFAR-100). Feature sizes may
    differ between student and teacher; only the batch size must match.

    Args:
        student_feat: (B, ...) student feature; receives gradients.
        teacher_feat: (B, ...) teacher feature; detached.
    """
    _check_same_batch("sp_loss", student_feat, teacher_feat)
    b = student_feat.shape[0]
    dtype = _compute_dtype(student_feat, teacher_feat)
    with _full_precision(student_feat):
        fs = student_feat.to(dtype).reshape(b, -1)
        ft = teacher_feat.detach().to(dtype).reshape(b, -1)
        g_s = F.normalize(fs @ fs.t(), p=2.0, dim=1)
        g_t = F.normalize(ft @ ft.t(), p=2.0, dim=1)
        return (g_s - g_t).pow(2).sum() / (b * b)


# --------------------------------------------------------------------------------------------------
# Relational KD (Park et al. 2019)
# --------------------------------------------------------------------------------------------------


def _pdist(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Pairwise Euclidean distances (B, B), clamped at ``eps`` before sqrt, zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (e @ e.t())).clamp(min=eps)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def _rkd_inputs(fn: str, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    _check_same_batch(fn, s, t)
    if s.shape[0] < 2:
        raise ValueError(f"{fn}: needs a batch of at least 2 samples, got shape {_shape(s)}.")
    dtype = _compute_dtype(s, t)
    b = s.shape[0]
    return s.to(dtype).reshape(b, -1), t.detach().to(dtype).reshape(b, -1)


def _normalised_distances(e: Tensor) -> Tensor:
    d = _pdist(e)
    return d / d[d > 0].mean()


def rkd_distance_loss(s: Tensor, t: Tensor) -> Tensor:
    """RKD distance-wise term (Park et al. 2019).

    ``psi_D(i, j) = ||e_i - e_j||_2 / mu`` with ``mu`` the mean of the positive (off-diagonal)
    distances in the batch; ``loss = smooth_l1(psi_D^s, psi_D^t)`` averaged over all B x B entries
    (diagonal zeros included), as the authors' code (lenscloth/RKD). Squared distances are clamped
    at 1e-12 before the sqrt. Embeddings are flattened to (B, -1). Invariant to a common rescaling
    of each embedding set. Published weight 25 (RepDistiller CIFAR-100).
    """
    with _full_precision(s):
        s, t = _rkd_inputs("rkd_distance_loss", s, t)
        with torch.no_grad():
            t_d = _normalised_distances(t)
        s_d = _normalised_distances(s)
        return F.smooth_l1_loss(s_d, t_d, reduction="mean")


def _angles(e: Tensor) -> Tensor:
    # diff[j, i] = e_i - e_j; normalised -> unit vectors from anchor j (zero vector for i == j).
    diff = e.unsqueeze(0) - e.unsqueeze(1)
    unit = F.normalize(diff, p=2.0, dim=2)
    # cos[j, i, k] = <e_ij, e_kj> : cosine of the angle at anchor j.
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(s: Tensor, t: Tensor) -> Tensor:
    """RKD angle-wise term (Park et al. 2019).

    For every triplet (i, j, k): ``psi_A = <e_ij, e_kj>`` with
    ``e_ij = (x_i - x_j) / ||x_i - x_j||_2`` (cosine of the angle at anchor j);
    ``loss = smooth_l1(psi_A^s, psi_A^t)`` averaged over all B^3 triplets (degenerate ones, which
    are 0 on both sides, included), as the authors' code. Embeddings are flattened to (B, -1).
    Published weight 50 (RepDistiller CIFAR-100).
    """
    with _full_precision(s):
        s, t = _rkd_inputs("rkd_angle_loss", s, t)
        with torch.no_grad():
            t_a = _angles(t)
        s_a = _angles(s)
        return F.smooth_l1_loss(s_a, t_a, reduction="mean")


def rkd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """Relational KD (Park et al. 2019): ``w_d * rkd_distance_loss + w_a * rkd_angle_loss``.

    Defaults ``w_d = 25, w_a = 50`` are RepDistiller's CIFAR-100 settings (the paper's
    metric-learning ratio 1 : 2). The method module may multiply the result by a further overall
    weight (RepDistiller: ``beta = 1``). Teacher side carries no gradient.
    """
    return distance_weight * rkd_distance_loss(student_emb, teacher_emb) + angle_weight * rkd_angle_loss(
        student_emb, teacher_emb
    )


# --------------------------------------------------------------------------------------------------
# Deep mutual learning (Zhang et al. 2018)
# --------------------------------------------------------------------------------------------------


def mutual_kl(student_logits: Tensor, peer_logits: list[Tensor], temperature: float = 1.0) -> Tensor:
    """Deep Mutual Learning mimicry term (Zhang et al. 2018).

    ``T^2 / K * sum_k KL(softmax(z_k / T) || softmax(z_s / T))`` over the K peers, each KL with
    'batchmean' reduction (sum over classes, mean over batch). Peers are detached: the term trains
    only ``student_logits`` (each cohort member calls it with the others as peers). ``T = 1`` is
    the paper; the paper weights it 1 against the student's cross-entropy (``L = CE + mean_k KL``).

    Args:
        student_logits: (B, C) logits of the network being updated.
        peer_logits: non-empty list of (B, C) logits of the other cohort members; detached.
        temperature: T > 0 (default 1).
    """
    fn = "mutual_kl"
    peers = _check_tensor_list(fn, "peer_logits", peer_logits)
    if not peers:
        raise ValueError(f"{fn}: peer_logits is empty; a cohort needs at least one peer.")
    _check_logits(fn, "student_logits", student_logits)
    for k, peer in enumerate(peers):
        _check_same_shape(fn, "student_logits", student_logits, f"peer_logits[{k}]", peer)
    T = _check_temperature(fn, temperature)
    dtype = _compute_dtype(student_logits, *peers)
    with _full_precision(student_logits):
        log_p_s = F.log_softmax(student_logits.to(dtype) / T, dim=1)
        total = log_p_s.new_zeros(())
        for peer in peers:
            log_p_k = F.log_softmax(peer.detach().to(dtype) / T, dim=1)
            total = total + F.kl_div(log_p_s, log_p_k, reduction="batchmean", log_target=True)
        return total / len(peers) * (T * T)
