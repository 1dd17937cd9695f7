"""Tests for kdexp.losses: every value is recomputed independently (plain Python / NumPy loops, the
later losses from the papers' and reference codes' formulas), on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdexp.losses import (
    ab_loss,
    at_loss,
    attention_map,
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
    hint_loss,
    kd_loss,
    mutual_kl,
    nst_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    sp_loss,
    standardize_logits,
    vid_loss,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


# ---------------------------------------------------------------------------------------- reference
def _np_softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def _np_kl_batchmean(target_logits: np.ndarray, input_logits: np.ndarray, T: float) -> float:
    """KL(softmax(target/T) || softmax(input/T)), summed over classes, averaged over rows."""
    total = 0.0
    for zt, zs in zip(target_logits, input_logits):
        pt, ps = _np_softmax(zt / T), _np_softmax(zs / T)
        total += sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(len(pt)))
    return total / len(target_logits)


def _np_smooth_l1(a: np.ndarray, b: np.ndarray) -> float:
    x = np.abs(a - b).ravel()
    return float(np.mean([0.5 * v * v if v < 1.0 else v - 0.5 for v in x]))


# ---------------------------------------------------------------------------------------- kd_loss
def test_kd_loss_hand_computed_two_class():
    # T=1, student uniform (1/2, 1/2), teacher softmax([ln 3, 0]) = (3/4, 1/4)
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_2x3_matches_loop_and_is_batchmean():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]])
    T = 2.0
    expected = T * T * _np_kl_batchmean(t.numpy(), s.numpy(), T)
    assert kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)
    # batchmean: repeating the batch does not change the value
    assert kd_loss(s.repeat(3, 1), t.repeat(3, 1), T).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_scaled_by_t_squared():
    s, t = _randn(5, 7, seed=1), _randn(5, 7, seed=2)
    for T in (1.0, 4.0, 10.0):
        unscaled = _np_kl_batchmean(t.numpy().astype(np.float64), s.numpy().astype(np.float64), T)
        assert kd_loss(s, t, T).item() == pytest.approx(T * T * unscaled, rel=1e-4)


def test_kd_loss_zero_when_equal():
    z = _randn(4, 10, seed=3) * 5
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_gradient_student_only_and_value():
    s = _randn(3, 5, seed=4).requires_grad_(True)
    t = _randn(3, 5, seed=5).requires_grad_(True)
    T = 4.0
    kd_loss(s, t, T).backward()
    assert t.grad is None
    # d/dz_s [T^2 * KL(p_t || p_s)] = T * (p_s - p_t) / B
    sn, tn = s.detach().numpy(), t.detach().numpy()
    expected = np.stack([T * (_np_softmax(a / T) - _np_softmax(b / T)) / 3 for a, b in zip(sn, tn)])
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_kd_loss_large_logits_finite():
    s = torch.tensor([[1000.0, -1000.0, 0.0]], requires_grad=True)
    t = torch.tensor([[-1000.0, 1000.0, 0.0]])
    loss = kd_loss(s, t, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_kd_loss_bad_inputs():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 4.0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="2-D"):
        kd_loss(torch.zeros(3), torch.zeros(3), 1.0)


def test_kd_loss_bf16_inputs_and_autocast():
    s, t = _randn(4, 6, seed=6), _randn(4, 6, seed=7)
    ref = kd_loss(s, t, 4.0)
    out = kd_loss(s.bfloat16(), t.bfloat16(), 4.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out2 = kd_loss(s, t, 4.0)
    assert out2.dtype == torch.float32
    assert out2.item() == pytest.approx(ref.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- hint_loss
def test_hint_loss_value_mean_over_all_elements():
    s, t = _randn(2, 3, 4, 4, seed=8), _randn(2, 3, 4, 4, seed=9)
    a, b = s.numpy().ravel().tolist(), t.numpy().ravel().tolist()
    expected = sum((x - y) ** 2 for x, y in zip(a, b)) / len(a)
    assert hint_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_hint_loss_shape_error_names_both_shapes():
    with pytest.raises(ValueError) as exc:
        hint_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 8, 8))
    msg = str(exc.value)
    assert "(2, 3, 4, 4)" in msg and "(2, 5, 8, 8)" in msg


def test_hint_loss_gradient_student_only():
    s = _randn(2, 3, 2, 2, seed=10).requires_grad_(True)
    t = _randn(2, 3, 2, 2, seed=11).requires_grad_(True)
    hint_loss(s, t).backward()
    assert t.grad is None
    torch.testing.assert_close(s.grad, 2 * (s - t).detach() / s.numel())


# ---------------------------------------------------------------------------------------- AT
def _np_attention(f: np.ndarray, p: float) -> np.ndarray:
    b, c, h, w = f.shape
    out = np.zeros((b, h * w))
    for i in range(b):
        for y in range(h):
            for x in range(w):
                out[i, y * w + x] = sum(abs(f[i, k, y, x]) ** p for k in range(c)) / c
        out[i] /= math.sqrt(sum(v * v for v in out[i]))
    return out


def _np_at_pair(fs: np.ndarray, ft: np.ndarray, p: float) -> float:
    a, b = _np_attention(fs, p), _np_attention(ft, p)
    return float(((a - b) ** 2).sum() / a.size)


def _np_avg_pool_2x2(f: np.ndarray) -> np.ndarray:
    b, c, h, w = f.shape
    out = np.zeros((b, c, h // 2, w // 2))
    for y in range(h // 2):
        for x in range(w // 2):
            out[:, :, y, x] = f[:, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean(axis=(2, 3))
    return out


def test_attention_map_value_and_unit_norm():
    f = _randn(2, 3, 4, 5, seed=12)
    am = attention_map(f, p=2)
    assert am.shape == (2, 20)
    np.testing.assert_allclose(am.numpy(), _np_attention(f.numpy().astype(np.float64), 2), rtol=1e-5)
    torch.testing.assert_close(am.norm(dim=1), torch.ones(2))


def test_at_loss_value_sum_over_pairs():
    pairs = [
        (_randn(2, 3, 4, 4, seed=13), _randn(2, 6, 4, 4, seed=14)),
        (_randn(2, 5, 2, 2, seed=15), _randn(2, 2, 2, 2, seed=16)),
    ]
    expected = sum(_np_at_pair(a.numpy().astype(np.float64), b.numpy().astype(np.float64), 2) for a, b in pairs)
    got = at_loss([a for a, _ in pairs], [b for _, b in pairs])
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_at_loss_p3_uses_absolute_value():
    fs, ft = _randn(2, 3, 3, 3, seed=17), _randn(2, 4, 3, 3, seed=18)
    expected = _np_at_pair(fs.numpy().astype(np.float64), ft.numpy().astype(np.float64), 3)
    assert at_loss([fs], [ft], p=3).item() == pytest.approx(expected, rel=1e-5)


def test_at_loss_invariant_to_positive_scaling():
    fs, ft = _randn(3, 4, 4, 4, seed=19), _randn(3, 8, 4, 4, seed=20)
    base = at_loss([fs], [ft]).item()
    assert base > 0
    assert at_loss([fs * 7.5], [ft]).item() == pytest.approx(base, rel=1e-5)
    assert at_loss([fs], [ft * 0.01]).item() == pytest.approx(base, rel=1e-5)


@pytest.mark.parametrize("student_larger", [True, False])
def test_at_loss_different_spatial_sizes_pools_larger(student_larger):
    big, small = _randn(2, 3, 8, 8, seed=21), _randn(2, 5, 4, 4, seed=22)
    pooled = _np_avg_pool_2x2(big.numpy().astype(np.float64))
    small_np = small.numpy().astype(np.float64)
    if student_larger:
        got = at_loss([big], [small])
        expected = _np_at_pair(pooled, small_np, 2)
    else:
        got = at_loss([small], [big])
        expected = _np_at_pair(small_np, pooled, 2)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_at_loss_gradient_student_only():
    fs = _randn(2, 3, 4, 4, seed=23).requires_grad_(True)
    ft = _randn(2, 3, 2, 2, seed=24).requires_grad_(True)
    at_loss([fs], [ft]).backward()
    assert ft.grad is None
    assert fs.grad is not None and fs.grad.abs().sum() > 0


def test_at_loss_bad_inputs():
    f = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="2 feature maps.*1"):
        at_loss([f, f], [f])
    with pytest.raises(ValueError, match="empty"):
        at_loss([], [])
    with pytest.raises(TypeError, match="list"):
        at_loss(f, [f])
    with pytest.raises(ValueError, match="batch"):
        at_loss([f], [torch.zeros(3, 3, 4, 4)])


def test_at_loss_autocast_close_to_fp32():
    fs, ft = _randn(2, 3, 4, 4, seed=25), _randn(2, 3, 4, 4, seed=26)
    ref = at_loss([fs], [ft])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = at_loss([fs], [ft])
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- SP
def _np_sp(fs: np.ndarray, ft: np.ndarray) -> float:
    b = fs.shape[0]
    a, c = fs.reshape(b, -1), ft.reshape(b, -1)

    def gram(m):
        g = np.array([[float(np.dot(m[i], m[j])) for j in range(b)] for i in range(b)])
        return g / np.sqrt((g * g).sum(axis=1, keepdims=True))

    d = gram(a) - gram(c)
    return float((d * d).sum() / (b * b))


def test_sp_loss_value():
    fs, ft = _randn(4, 3, 2, 2, seed=27), _randn(4, 6, 3, 3, seed=28)
    expected = _np_sp(fs.numpy().astype(np.float64), ft.numpy().astype(np.float64))
    assert sp_loss(fs, ft).item() == pytest.approx(expected, rel=1e-5)


def test_sp_loss_invariant_to_channel_permutation():
    fs, ft = _randn(5, 6, 3, 3, seed=29), _randn(5, 4, 3, 3, seed=30)
    base = sp_loss(fs, ft).item()
    assert base > 0
    perm = torch.randperm(6, generator=_gen(31))
    assert sp_loss(fs[:, perm], ft).item() == pytest.approx(base, rel=1e-5)


def test_sp_loss_zero_for_identical_and_grad_student_only():
    fs = _randn(3, 4, 2, 2, seed=32).requires_grad_(True)
    ft = fs.detach().clone().requires_grad_(True)
    assert sp_loss(fs, ft).item() == pytest.approx(0.0, abs=1e-10)
    other = _randn(3, 2, 2, 2, seed=33).requires_grad_(True)
    sp_loss(fs, other).backward()
    assert other.grad is None and fs.grad.abs().sum() > 0


def test_sp_loss_autocast_keeps_fp32_gram():
    fs, ft = _randn(8, 16, 4, 4, seed=34), _randn(8, 32, 4, 4, seed=35)
    ref = sp_loss(fs, ft)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sp_loss(fs, ft)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)


def test_sp_loss_batch_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        sp_loss(torch.zeros(2, 3), torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------- RKD
def _np_rkd_distance(s: np.ndarray, t: np.ndarray) -> float:
    def psi(e):
        b = len(e)
        d = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                if i != j:
                    d[i, j] = math.sqrt(sum((e[i] - e[j]) ** 2))
        mu = d[~np.eye(b, dtype=bool)].mean()
        return d / mu

    return _np_smooth_l1(psi(s), psi(t))


def _np_rkd_angle(s: np.ndarray, t: np.ndarray) -> float:
    def psi(e):
        b = len(e)
        out = []
        for j in range(b):  # anchor
            for i in range(b):
                for k in range(b):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out.append(0.0 if nu == 0 or nv == 0 else float(np.dot(u, v) / (nu * nv)))
        return np.array(out)

    return _np_smooth_l1(psi(s), psi(t))


def _rkd_pair(seed: int = 40):
    s = _randn(5, 4, seed=seed) * 2
    t = _randn(5, 7, seed=seed + 1) * 3
    return s, t


def test_rkd_distance_value():
    s, t = _rkd_pair()
    expected = _np_rkd_distance(s.numpy().astype(np.float64), t.numpy().astype(np.float64))
    assert rkd_distance_loss(s, t).item() == pytest.approx(expected, rel=1e-4)


def test_rkd_angle_value():
    s, t = _rkd_pair()
    expected = _np_rkd_angle(s.numpy().astype(np.float64), t.numpy().astype(np.float64))
    assert rkd_angle_loss(s, t).item() == pytest.approx(expected, rel=1e-4)


def test_rkd_loss_weights_and_flattening():
    s, t = _rkd_pair(seed=42)
    sn, tn = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    d, a = _np_rkd_distance(sn, tn), _np_rkd_angle(sn, tn)
    assert rkd_loss(s, t).item() == pytest.approx(25 * d + 50 * a, rel=1e-4)
    assert rkd_loss(s, t, distance_weight=1.0, angle_weight=0.0).item() == pytest.approx(d, rel=1e-4)
    # 4-D features are flattened to (B, -1)
    s4, t4 = s.reshape(5, 1, 2, 2), t.reshape(5, 7, 1, 1)
    assert rkd_loss(s4, t4).item() == pytest.approx(rkd_loss(s, t).item(), rel=1e-6)


def test_rkd_distance_invariant_to_common_scaling():
    s, t = _rkd_pair(seed=44)
    base = rkd_distance_loss(s, t).item()
    assert base > 0
    assert rkd_distance_loss(s * 3.7, t * 3.7).item() == pytest.approx(base, rel=1e-5)
    assert rkd_distance_loss(s * 0.2, t).item() == pytest.approx(base, rel=1e-5)


def test_rkd_zero_when_student_is_scaled_teacher():
    t = _randn(6, 5, seed=46)
    assert rkd_distance_loss(2.5 * t, t).item() == pytest.approx(0.0, abs=1e-10)
    assert rkd_angle_loss(2.5 * t + 1.0, t).item() == pytest.approx(0.0, abs=1e-10)


def test_rkd_gradient_student_only_and_finite():
    s = _randn(6, 8, seed=47).requires_grad_(True)
    t = _randn(6, 8, seed=48).requires_grad_(True)
    rkd_loss(s, t).backward()
    assert t.grad is None
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_rkd_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        rkd_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="batch"):
        rkd_loss(torch.zeros(4, 3), torch.zeros(5, 3))


def test_rkd_autocast_keeps_fp32_distances():
    s, t = _rkd_pair(seed=49)
    ref = rkd_loss(s, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rkd_loss(s, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- DML
def test_mutual_kl_hand_computed():
    # student uniform over 2 classes; peers (3/4, 1/4) and (1/4, 3/4) -> both KLs equal
    s = torch.tensor([[0.0, 0.0]])
    peers = [torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, math.log(3.0)]])]
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert mutual_kl(s, peers).item() == pytest.approx(expected, rel=1e-6)


def test_mutual_kl_mean_over_peers_and_temperature():
    s = _randn(3, 4, seed=50)
    peers = [_randn(3, 4, seed=51), _randn(3, 4, seed=52), _randn(3, 4, seed=53)]
    for T in (1.0, 3.0):
        kls = [_np_kl_batchmean(p.numpy(), s.numpy(), T) for p in peers]
        expected = T * T * sum(kls) / len(kls)
        assert mutual_kl(s, peers, temperature=T).item() == pytest.approx(expected, rel=1e-5)


def test_mutual_kl_peers_get_no_gradient():
    s = _randn(3, 4, seed=54).requires_grad_(True)
    peers = [_randn(3, 4, seed=55).requires_grad_(True), _randn(3, 4, seed=56).requires_grad_(True)]
    mutual_kl(s, peers).backward()
    assert all(p.grad is None for p in peers)
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_mutual_kl_bad_inputs():
    s = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="empty"):
        mutual_kl(s, [])
    with pytest.raises(TypeError, match="list"):
        mutual_kl(s, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"peer_logits\[1\]"):
        mutual_kl(s, [torch.zeros(2, 3), torch.zeros(2, 4)])


# ---------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_all_losses_on_cuda_under_bf16_autocast():
    dev = torch.device("cuda")
    logits_s, logits_t = _randn(4, 10, seed=60).to(dev), _randn(4, 10, seed=61).to(dev)
    fs, ft = _randn(4, 8, 8, 8, seed=62).to(dev), _randn(4, 16, 4, 4, seed=63).to(dev)
    cases = {
        "kd": lambda: kd_loss(logits_s, logits_t, 4.0),
        "dml": lambda: mutual_kl(logits_s, [logits_t]),
        "hint": lambda: hint_loss(fs, fs.flip(0)),
        "at": lambda: at_loss([fs], [ft]),
        "sp": lambda: sp_loss(fs, ft),
        "rkd": lambda: rkd_loss(fs, ft),
    }
    for name, fn in cases.items():
        ref = fn()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fn()
        assert out.dtype == torch.float32, name
        assert out.item() == pytest.approx(ref.item(), rel=1e-3), name


# ------------------------------------------------------------------------------ later losses (float64 inputs)
def _randn64(*shape: int, seed: int = 0) -> torch.Tensor:
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
    s, t = _randn64(4, 6, seed=1), _randn64(4, 5, seed=2)
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
    s, t = _randn64(3, 4, seed=3), _randn64(3, 7, seed=4)
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
    s, t = _randn64(2, 3, 4, 4, seed=5), _randn64(2, 5, 2, 2, seed=6)
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
    mu, t = _randn64(2, 3, 2, 2, seed=7), _randn64(2, 3, 2, 2, seed=8)
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
    s, t = _randn64(2, 2, 3, 3, seed=9), _randn64(2, 2, 3, 3, seed=10)
    one = ab_loss([s], [t]).item()
    assert ab_loss([s, s, s], [t, t, t]).item() == pytest.approx(one * (0.25 + 0.5 + 1.0))


# ------------------------------------------------------------------------------ FSP
def test_fsp_matrix_and_loss_match_loop():
    s = [_randn64(2, 3, 4, 4, seed=11), _randn64(2, 2, 2, 2, seed=12)]
    t = [_randn64(2, 3, 4, 4, seed=13), _randn64(2, 2, 2, 2, seed=14)]

    def g(bot, top):
        bot = _pool(_np(bot), 2).reshape(2, bot.shape[1], 4)
        top = _np(top).reshape(2, top.shape[1], 4)
        return np.array([[[np.mean(top[b, i] * bot[b, j]) for j in range(bot.shape[1])] for i in range(top.shape[1])] for b in range(2)])

    assert np.allclose(_np(fsp_matrix(s[0], s[1])), g(s[0], s[1]))
    expected = np.mean((g(s[0], s[1]) - g(t[0], t[1])) ** 2)
    assert fsp_loss(s, t).item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="equal channel counts"):
        fsp_loss(s, [_randn64(2, 4, 4, 4), t[1]])


# ------------------------------------------------------------------------------ FT
def test_factor_loss_matches_loop():
    s, t = _randn64(2, 3, 4, 4, seed=15), _randn64(2, 5, 2, 2, seed=16)

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
    s, t = _randn64(4, 6, seed=17) * 3, _randn64(4, 6, seed=18) * 3
    y = torch.tensor([0, 5, 2, 2])
    tckd, nckd = _dkd_reference(s, t, y, 4.0)
    assert dkd_target_loss(s, t, y, 4.0).item() == pytest.approx(tckd, rel=1e-9)
    assert dkd_nontarget_loss(s, t, y, 4.0).item() == pytest.approx(nckd, rel=1e-9)


def test_dkd_decomposes_kd_exactly():
    # Eq. 4 of the paper: KD = TCKD + (1 - p_gt^t) NCKD (per sample); check on one sample
    s, t, y = _randn64(1, 5, seed=19), _randn64(1, 5, seed=20), torch.tensor([3])
    pt_gt = torch.softmax(t / 2.0, 1)[0, 3].item()
    kd = kd_loss(s, t, 2.0).item()
    decomposed = dkd_target_loss(s, t, y, 2.0).item() + (1 - pt_gt) * dkd_nontarget_loss(s, t, y, 2.0).item()
    assert kd == pytest.approx(decomposed, rel=1e-9)


# ------------------------------------------------------------------------------ DIST
def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)


def test_dist_relations_match_loop():
    s, t = _randn64(3, 5, seed=21), _randn64(3, 5, seed=22)
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
    s, t = _randn64(2, 3, 8, 8, seed=23), _randn64(2, 3, 8, 8, seed=24)
    a, b = _np(s), _np(t)
    mse = lambda x, y: np.mean((x - y) ** 2)  # noqa: E731
    expected = (mse(a, b) + 0.5 * mse(_pool(a, 4), _pool(b, 4)) + 0.25 * mse(_pool(a, 2), _pool(b, 2))
                + 0.125 * mse(_pool(a, 1), _pool(b, 1))) / (1 + 0.5 + 0.25 + 0.125)
    # a 1x1 level (the pooled embedding) has only the plain MSE
    s1, t1 = _randn64(2, 4, 1, 1, seed=25), _randn64(2, 4, 1, 1, seed=26)
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
    s = _randn64(4, 3, 4, 4, seed=27).requires_grad_()
    t = _randn64(4, 3, 4, 4, seed=28).requires_grad_()
    for loss in (nst_loss(s, t), factor_loss(s, t), pkt_loss(s, t), ab_loss([s], [t]), fsp_loss([s, s], [t, t]), hcl_loss([s], [t])):
        loss.backward()
    assert t.grad is None and s.grad is not None
    z_s, z_t = _randn64(4, 5, seed=29).requires_grad_(), _randn64(4, 5, seed=30).requires_grad_()
    y = torch.tensor([0, 1, 2, 3])
    (dkd_target_loss(z_s, z_t, y, 4) + dkd_nontarget_loss(z_s, z_t, y, 4) + dist_inter_loss(z_s, z_t) + dist_intra_loss(z_s, z_t)).backward()
    assert z_t.grad is None and z_s.grad is not None
