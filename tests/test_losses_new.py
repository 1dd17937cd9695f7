"""Tests of the losses added for issue 16: each value recomputed independently (NumPy loops
written from the papers' and reference codes' formulas), on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdexp.losses import (
    ab_loss,
    cc_gaussian_loss,
    cc_loss,
    crd_nce_loss,
    dist_inter_loss,
    dist_intra_loss,
    dkd_nontarget_loss,
    dkd_target_loss,
    factor_loss,
    fsp_loss,
    fsp_matrix,
    hcl_loss,
    kd_loss,
    nst_loss,
    pkt_loss,
    standardize_logits,
    vid_loss,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def _softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def _pool(x: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling (B, C, H, W) -> (B, C, size, size) for H divisible by size."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


# ------------------------------------------------------------------------------ standardisation
def test_standardize_logits_zero_mean_unit_unbiased_std():
    z = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, std = 3.0, math.sqrt(((1 - 3) ** 2 + 1 + 0 + 9) / 3)
    expected = [(v - mean) / (std + 1e-7) for v in (1.0, 2.0, 3.0, 6.0)]
    assert standardize_logits(z)[0].tolist() == pytest.approx(expected, rel=1e-6)
    # scale and shift invariant: the point of the method
    assert torch.allclose(standardize_logits(5 * z + 7), standardize_logits(z), atol=1e-6)


# ------------------------------------------------------------------------------ PKT
def test_pkt_matches_loop():
    s, t = _randn(4, 6, seed=1), _randn(4, 5, seed=2)
    eps = 1e-7

    def cond(f):
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + eps)
        k = np.array([[(1 + f[i] @ f[j]) / 2 for j in range(len(f))] for i in range(len(f))])
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = cond(_np(s)), cond(_np(t))
    expected = np.mean([[pt[i, j] * math.log((pt[i, j] + eps) / (ps[i, j] + eps)) for j in range(4)] for i in range(4)])
    assert pkt_loss(s, t).item() == pytest.approx(expected, rel=1e-9)
    assert pkt_loss(t[:, :5], t).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ CC
def test_cc_reference_form_is_consecutive_difference_correlation():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, -1.0]])
    # deltas |s - t| = [1,0], [0,2], [1,2]; consecutive products summed: 0, 0*1 + 2*2 = 4 -> mean 2
    assert cc_loss(s, t).item() == pytest.approx(2.0)
    # both embedding heads learn through it (RepDistiller trains embed_t too)
    s.requires_grad_(), t.requires_grad_()
    cc_loss(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_cc_gaussian_matches_taylor_kernel_loop():
    s, t = _randn(3, 4, seed=3), _randn(3, 7, seed=4)
    gamma, order = 0.4, 2

    def corr(f):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        c = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                d = f[i] @ f[j]
                c[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * d**p for p in range(order + 1))
        return c

    expected = ((corr(_np(s)) - corr(_np(t))) ** 2).sum() / 9
    assert cc_gaussian_loss(s, t, gamma, order).item() == pytest.approx(expected, rel=1e-9)
    # high order approaches the exact RBF exp(-gamma ||a - b||^2) of unit vectors
    a = F.normalize(s, dim=1)
    rbf = torch.exp(-gamma * torch.cdist(a, a).pow(2))
    zero = torch.zeros(3, 1, dtype=torch.float64) + 1  # constant rows -> correlation exp(0)=1 everywhere
    assert cc_gaussian_loss(s, zero, gamma, order=20).item() == pytest.approx(((rbf - 1) ** 2).sum().item() / 9, rel=1e-6)


# ------------------------------------------------------------------------------ NST
def test_nst_matches_mmd_loop():
    s, t = _randn(2, 3, 4, 4, seed=5), _randn(2, 5, 2, 2, seed=6)
    fs = _pool(_np(s), 2).reshape(2, 3, 4)
    ft = _np(t).reshape(2, 5, 4)
    fs = fs / np.linalg.norm(fs, axis=2, keepdims=True)
    ft = ft / np.linalg.norm(ft, axis=2, keepdims=True)

    def k(a, b):
        return np.mean([[[(a[n, i] @ b[n, j]) ** 2 for j in range(b.shape[1])] for i in range(a.shape[1])] for n in range(2)])

    expected = k(ft, ft) + k(fs, fs) - 2 * k(fs, ft)
    assert nst_loss(s, t).item() == pytest.approx(expected, rel=1e-9)
    assert nst_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ VID
def test_vid_is_gaussian_nll_with_softplus_variance():
    mu, t = _randn(2, 3, 2, 2, seed=7), _randn(2, 3, 2, 2, seed=8)
    alpha = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    var = np.log1p(np.exp(_np(alpha))) + 1e-5
    d = _np(mu) - _np(t)
    expected = np.mean(0.5 * (d**2 / var[None, :, None, None] + np.log(var)[None, :, None, None]))
    assert vid_loss(mu, t, alpha).item() == pytest.approx(expected, rel=1e-9)


def test_vid_reference_initial_variance_is_5():
    # RepDistiller initialises log_scale = log(exp(5 - eps) - 1), so the variance starts at 5
    alpha = torch.full((1,), math.log(math.exp(5.0 - 1e-5) - 1.0))
    mu = torch.zeros(1, 1, 1, 1)
    t = torch.ones(1, 1, 1, 1)
    assert vid_loss(mu, t, alpha).item() == pytest.approx(0.5 * (1 / 5 + math.log(5)), rel=1e-5)


# ------------------------------------------------------------------------------ AB
def test_ab_loss_hand_computed():
    # one layer (weight 2^0 = 1), batch 1; margin 1
    s = torch.tensor([[[[0.5, -2.0, 0.0, 3.0]]]])
    t = torch.tensor([[[[-1.0, -1.0, 1.0, 1.0]]]])
    # el 0: t<=0, s>-1 -> (1.5)^2 = 2.25; el 1: t<=0, s<=-1 -> 0; el 2: t>0, s<=1 -> (0-1)^2 = 1; el 3: s>1 -> 0
    assert ab_loss([s], [t]).item() == pytest.approx((2.25 + 1.0) * 3 / 1000)


def test_ab_loss_layer_weights_halve_towards_the_input():
    s, t = _randn(2, 2, 3, 3, seed=9), _randn(2, 2, 3, 3, seed=10)
    one = ab_loss([s], [t]).item()
    assert ab_loss([s, s, s], [t, t, t]).item() == pytest.approx(one * (0.25 + 0.5 + 1.0))


# ------------------------------------------------------------------------------ FSP
def test_fsp_matrix_and_loss_match_loop():
    s = [_randn(2, 3, 4, 4, seed=11), _randn(2, 2, 2, 2, seed=12)]
    t = [_randn(2, 3, 4, 4, seed=13), _randn(2, 2, 2, 2, seed=14)]

    def g(bot, top):
        bot = _pool(_np(bot), 2).reshape(2, bot.shape[1], 4)
        top = _np(top).reshape(2, top.shape[1], 4)
        return np.array([[[np.mean(top[b, i] * bot[b, j]) for j in range(bot.shape[1])] for i in range(top.shape[1])] for b in range(2)])

    assert np.allclose(_np(fsp_matrix(s[0], s[1])), g(s[0], s[1]))
    expected = np.mean((g(s[0], s[1]) - g(t[0], t[1])) ** 2)
    assert fsp_loss(s, t).item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="equal channel counts"):
        fsp_loss(s, [_randn(2, 4, 4, 4), t[1]])


# ------------------------------------------------------------------------------ FT
def test_factor_loss_matches_loop():
    s, t = _randn(2, 3, 4, 4, seed=15), _randn(2, 5, 2, 2, seed=16)

    def phi(f):
        m = (f**2).mean(axis=1).reshape(f.shape[0], -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    expected = np.mean(np.abs(phi(_pool(_np(s), 2)) - phi(_np(t))))
    assert factor_loss(s, t).item() == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ DKD
def _dkd_reference(s, t, y, T):
    tckd = nckd = 0.0
    for zs, zt, g in zip(_np(s), _np(t), y.tolist()):
        ps, pt = _softmax(zs / T), _softmax(zt / T)
        bs, bt = np.array([ps[g], 1 - ps[g]]), np.array([pt[g], 1 - pt[g]])
        tckd += np.sum(bt * np.log(bt / bs))
        rs, rt = np.delete(ps, g), np.delete(pt, g)
        rs, rt = rs / rs.sum(), rt / rt.sum()
        nckd += np.sum(rt * np.log(rt / rs))
    n = len(y)
    return tckd / n * T * T, nckd / n * T * T


def test_dkd_terms_match_paper_decomposition():
    s, t = _randn(4, 6, seed=17) * 3, _randn(4, 6, seed=18) * 3
    y = torch.tensor([0, 5, 2, 2])
    tckd, nckd = _dkd_reference(s, t, y, 4.0)
    assert dkd_target_loss(s, t, y, 4.0).item() == pytest.approx(tckd, rel=1e-9)
    assert dkd_nontarget_loss(s, t, y, 4.0).item() == pytest.approx(nckd, rel=1e-9)


def test_dkd_decomposes_kd_exactly():
    # Eq. 4 of the paper: KD = TCKD + (1 - p_gt^t) NCKD (per sample); check on one sample
    s, t, y = _randn(1, 5, seed=19), _randn(1, 5, seed=20), torch.tensor([3])
    pt_gt = torch.softmax(t / 2.0, 1)[0, 3].item()
    kd = kd_loss(s, t, 2.0).item()
    decomposed = dkd_target_loss(s, t, y, 2.0).item() + (1 - pt_gt) * dkd_nontarget_loss(s, t, y, 2.0).item()
    assert kd == pytest.approx(decomposed, rel=1e-9)


# ------------------------------------------------------------------------------ DIST
def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)


def test_dist_relations_match_loop():
    s, t = _randn(3, 5, seed=21), _randn(3, 5, seed=22)
    T = 4.0
    ps = np.array([_softmax(r / T) for r in _np(s)])
    pt = np.array([_softmax(r / T) for r in _np(t)])
    inter = T * T * (1 - np.mean([_pearson(ps[b], pt[b]) for b in range(3)]))
    intra = T * T * (1 - np.mean([_pearson(ps[:, c], pt[:, c]) for c in range(5)]))
    assert dist_inter_loss(s, t, T).item() == pytest.approx(inter, rel=1e-9)
    assert dist_intra_loss(s, t, T).item() == pytest.approx(intra, rel=1e-9)
    # identical predictions: correlation 1 (up to the eps in the denominator)
    assert dist_inter_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------------------ ReviewKD
def test_hcl_loss_pyramid_weights():
    s, t = _randn(2, 3, 8, 8, seed=23), _randn(2, 3, 8, 8, seed=24)
    a, b = _np(s), _np(t)
    mse = lambda x, y: np.mean((x - y) ** 2)  # noqa: E731
    expected = (mse(a, b) + 0.5 * mse(_pool(a, 4), _pool(b, 4)) + 0.25 * mse(_pool(a, 2), _pool(b, 2))
                + 0.125 * mse(_pool(a, 1), _pool(b, 1))) / (1 + 0.5 + 0.25 + 0.125)
    # a 1x1 level (the pooled embedding) has only the plain MSE
    s1, t1 = _randn(2, 4, 1, 1, seed=25), _randn(2, 4, 1, 1, seed=26)
    expected += mse(_np(s1), _np(t1))
    assert hcl_loss([s, s1], [t, t1]).item() == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ CRD
def test_crd_nce_loss_matches_formula():
    h = torch.tensor([[0.5, 0.1, 0.2], [2.0, 0.05, 0.3]], dtype=torch.float64)
    n, eps = 10, 1e-7
    c = 2 / n
    expected = 0.0
    for row in h.tolist():
        expected += math.log(row[0] / (row[0] + c + eps)) + sum(math.log(c / (v + c + eps)) for v in row[1:])
    assert crd_nce_loss(h, n).item() == pytest.approx(-expected / 2, rel=1e-9)


def test_new_losses_detach_the_teacher_side():
    s = _randn(4, 3, 4, 4, seed=27).requires_grad_()
    t = _randn(4, 3, 4, 4, seed=28).requires_grad_()
    for loss in (nst_loss(s, t), factor_loss(s, t), pkt_loss(s, t), ab_loss([s], [t]), fsp_loss([s, s], [t, t]), hcl_loss([s], [t])):
        loss.backward()
    assert t.grad is None and s.grad is not None
    z_s, z_t = _randn(4, 5, seed=29).requires_grad_(), _randn(4, 5, seed=30).requires_grad_()
    y = torch.tensor([0, 1, 2, 3])
    (dkd_target_loss(z_s, z_t, y, 4) + dkd_nontarget_loss(z_s, z_t, y, 4) + dist_inter_loss(z_s, z_t) + dist_intra_loss(z_s, z_t)).backward()
    assert z_t.grad is None and z_s.grad is not None
