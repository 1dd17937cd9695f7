"""Tests for kdexp.connectors.HintRegressor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdexp.connectors import HintRegressor
from kdexp.losses import hint_loss


def _hwc_to_chw(hwc: tuple[int, int, int]) -> tuple[int, int, int]:
    h, w, c = hwc
    return (c, h, w)


def _layers(reg: HintRegressor) -> list[nn.Module]:
    return list(reg.conv) if isinstance(reg.conv, nn.Sequential) else [reg.conv]


# (student HxWxC, teacher HxWxC, expected layer types, expected kernel/stride of the first layer)
CASES = [
    pytest.param((16, 16, 32), (8, 8, 64), [nn.Conv2d], ((3, 3), (2, 2)), id="2x-larger-16x16x32->8x8x64"),
    pytest.param((8, 8, 64), (8, 8, 256), [nn.Conv2d], ((1, 1), (1, 1)), id="same-spatial-channels-only"),
    pytest.param((4, 4, 16), (8, 8, 16), [nn.ConvTranspose2d], ((4, 4), (2, 2)), id="2x-smaller-4x4->8x8"),
    pytest.param((7, 7, 8), (5, 5, 12), [nn.Conv2d], ((3, 3), (1, 1)), id="larger-7x7->5x5"),
    pytest.param((5, 5, 8), (7, 7, 12), [nn.ConvTranspose2d], ((3, 3), (1, 1)), id="smaller-5x5->7x7"),
    pytest.param((8, 6, 8), (4, 4, 16), [nn.Conv2d], ((5, 3), (1, 1)), id="mixed-hw-both-larger"),
    pytest.param((4, 6, 8), (8, 7, 16), [nn.ConvTranspose2d], ((5, 2), (1, 1)), id="mixed-hw-both-smaller"),
    pytest.param((9, 3, 8), (4, 8, 16), [nn.Conv2d, nn.ConvTranspose2d], ((6, 1), (1, 1)), id="taller-narrower"),
    pytest.param((3, 9, 8), (8, 4, 16), [nn.Conv2d, nn.ConvTranspose2d], ((1, 6), (1, 1)), id="shorter-wider"),
    pytest.param((32, 16, 8), (16, 8, 8), [nn.Conv2d], ((3, 3), (2, 2)), id="2x-larger-non-square"),
    pytest.param((4, 4, 8), (16, 16, 8), [nn.ConvTranspose2d], ((13, 13), (1, 1)), id="4x-smaller"),
]


@pytest.mark.parametrize("student_hwc, teacher_hwc, layer_types, kernel_stride", CASES)
def test_output_shape_and_layer_choice(student_hwc, teacher_hwc, layer_types, kernel_stride):
    s_shape, t_shape = _hwc_to_chw(student_hwc), _hwc_to_chw(teacher_hwc)
    reg = HintRegressor(s_shape, t_shape)
    layers = _layers(reg)
    assert [type(m) for m in layers] == layer_types
    assert (layers[0].kernel_size, layers[0].stride) == kernel_stride
    assert layers[0].in_channels == s_shape[0] and layers[-1].out_channels == t_shape[0]
    out = reg(torch.randn(3, *s_shape))
    assert tuple(out.shape) == (3, *t_shape)


def test_same_size_kernel_3_is_padded_3x3():
    reg = HintRegressor((64, 8, 8), (256, 8, 8), same_size_kernel=3)
    assert reg.conv.kernel_size == (3, 3) and reg.conv.padding == (1, 1)
    assert reg(torch.randn(2, 64, 8, 8)).shape == (2, 256, 8, 8)


def test_relu_flag():
    x = torch.randn(4, 8, 4, 4)
    with_relu = HintRegressor((8, 4, 4), (8, 4, 4))(x)
    without = HintRegressor((8, 4, 4), (8, 4, 4), use_relu=False)(x)
    assert (with_relu >= 0).all()
    assert (without < 0).any()


def test_trains_with_hint_loss():
    torch.manual_seed(0)
    reg = HintRegressor((4, 8, 8), (6, 4, 4))
    fs, ft = torch.randn(4, 4, 8, 8, requires_grad=True), torch.rand(4, 6, 4, 4)
    loss = hint_loss(reg(fs), ft)
    loss.backward()
    assert all(p.grad is not None for p in reg.parameters())
    assert fs.grad is not None


def test_bad_shapes():
    with pytest.raises(ValueError, match="student_shape"):
        HintRegressor((2, 8, 8, 8), (4, 8, 8))
    with pytest.raises(ValueError, match="teacher_shape"):
        HintRegressor((8, 8, 8), (0, 8, 8))
    with pytest.raises(ValueError, match="same_size_kernel"):
        HintRegressor((8, 8, 8), (4, 8, 8), same_size_kernel=2)
    reg = HintRegressor((8, 8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match=r"\(2, 8, 4, 4\)"):
        reg(torch.randn(2, 8, 4, 4))
