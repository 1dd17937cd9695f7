"""Learned connectors between student and teacher features.

:class:`HintRegressor` is the FitNets regressor (Romero et al. 2015): it maps a student feature map
(C_s, H_s, W_s) to the teacher's (C_t, H_t, W_t) so :func:`kdexp.losses.hint_loss` can compare them.
It trains with the student (its parameters belong in the student's optimizer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HintRegressor"]


def _as_chw(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        chw = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        chw = ()
    if len(chw) != 3 or any(v <= 0 for v in chw) or any(int(v) != v for v in shape):
        raise ValueError(
            f"HintRegressor: {name} must be (C, H, W) of three positive integers (no batch dim), "
            f"got {shape!r}."
        )
    return chw  # type: ignore[return-value]


class HintRegressor(nn.Module):
    """FitNets regressor: student (C_s, H_s, W_s) -> teacher (C_t, H_t, W_t), then BN (+ ReLU).

    Layer chosen by the spatial sizes (first match wins):

    ==========================================  ====================================================
    spatial relation                            layer
    ==========================================  ====================================================
    same (H, W)                                 Conv2d, kernel ``same_size_kernel`` (default 1),
                                                'same' padding
    student exactly 2x larger (both axes)       Conv2d 3x3, stride 2, padding 1
    student exactly 2x smaller (both axes)      ConvTranspose2d 4x4, stride 2, padding 1
    student larger or equal on both axes        Conv2d, kernel (H_s - H_t + 1, W_s - W_t + 1)
    student smaller or equal on both axes       ConvTranspose2d, kernel (H_t - H_s + 1, W_t - W_s + 1)
    larger on one axis, smaller on the other    Conv2d shrinking the larger axis, then
                                                ConvTranspose2d growing the smaller one
    ==========================================  ====================================================

    The first five rows follow RepDistiller's ``ConvReg`` (and the FitNets paper's fully
    convolutional regressor, kernel = size difference + 1); the transposed-conv generalisation and
    the mixed case extend it to every mismatch. For equal sizes RepDistiller's ``ConvReg`` uses a
    1x1 conv (its kernel formula gives ``(1, 1)``), hence the default; pass
    ``same_size_kernel=3`` for a 3x3 conv with padding 1.

    Args:
        student_shape: (C, H, W) of the student feature (no batch dim).
        teacher_shape: (C, H, W) of the teacher feature.
        use_relu: apply ReLU after BatchNorm (RepDistiller default True; teacher hint features taken
            after a ReLU are non-negative).
        same_size_kernel: odd kernel size used when the spatial sizes are equal.
    """

    def __init__(
        self,
        student_shape: tuple[int, int, int],
        teacher_shape: tuple[int, int, int],
        use_relu: bool = True,
        *,
        same_size_kernel: int = 1,
    ) -> None:
        super().__init__()
        self.student_shape = _as_chw("student_shape", student_shape)
        self.teacher_shape = _as_chw("teacher_shape", teacher_shape)
        if not (isinstance(same_size_kernel, int) and same_size_kernel > 0 and same_size_kernel % 2 == 1):
            raise ValueError(
                f"HintRegressor: same_size_kernel must be a positive odd integer, got {same_size_kernel!r}."
            )
        s_c, s_h, s_w = self.student_shape
        t_c, t_h, t_w = self.teacher_shape

        if (s_h, s_w) == (t_h, t_w):
            k = same_size_kernel
            conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=k, padding=k // 2)
        elif s_h == 2 * t_h and s_w == 2 * t_w:
            conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h and 2 * s_w == t_w:
            conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            conv = nn.Conv2d(s_c, t_c, kernel_size=(s_h - t_h + 1, s_w - t_w + 1))
        elif s_h <= t_h and s_w <= t_w:
            conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=(t_h - s_h + 1, t_w - s_w + 1))
        elif s_h > t_h:  # taller but narrower: shrink H, then grow W
            conv = nn.Sequential(
                nn.Conv2d(s_c, t_c, kernel_size=(s_h - t_h + 1, 1)),
                nn.ConvTranspose2d(t_c, t_c, kernel_size=(1, t_w - s_w + 1)),
            )
        else:  # shorter but wider: shrink W, then grow H
            conv = nn.Sequential(
                nn.Conv2d(s_c, t_c, kernel_size=(1, s_w - t_w + 1)),
                nn.ConvTranspose2d(t_c, t_c, kernel_size=(t_h - s_h + 1, 1)),
            )
        self.conv = conv
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = bool(use_relu)
        self.relu: nn.Module = nn.ReLU() if self.use_relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.student_shape:
            raise ValueError(
                f"HintRegressor: expected input (B, {', '.join(map(str, self.student_shape))}) "
                f"(student_shape {self.student_shape}), got {tuple(x.shape)}."
            )
        return self.relu(self.bn(self.conv(x)))

    def extra_repr(self) -> str:
        return f"student_shape={self.student_shape}, teacher_shape={self.teacher_shape}, use_relu={self.use_relu}"



# ==================================================================================================
# Heads and memories of the methods added for issue 16 (RepDistiller / mdistiller shapes).
# ==================================================================================================

__all__ += ["Embed", "VIDRegressor", "Paraphraser", "Translator", "ABF", "ContrastMemory"]


class Embed(nn.Module):
    """Flatten, ``Linear(dim_in, dim_out)``, and (``normalize=True``) L2-normalise each row.

    CRD's heads are normalised (RepDistiller ``Embed``); CC's are not (``LinearEmbed``).
    """

    def __init__(self, dim_in: int, dim_out: int = 128, normalize: bool = True) -> None:
        super().__init__()
        if dim_out < 1:
            raise ValueError(f"Embed: dim_out (the embedding size) must be >= 1, got {dim_out!r}.")
        self.linear = nn.Linear(dim_in, dim_out)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return F.normalize(x, dim=1) if self.normalize else x


class VIDRegressor(nn.Module):
    """VID's mean predictor and per-channel variance (RepDistiller ``VIDLoss``): three 1x1 convs
    (no bias) with ReLUs, ``C_s -> C_mid -> C_mid -> C_t``, and ``log_scale`` α (C_t,) initialised so
    that ``softplus(α) + eps = init_var`` (5). The larger of the two maps is average-pooled to the
    smaller size by the caller (:meth:`align`)."""

    def __init__(
        self, s_channels: int, mid_channels: int, t_channels: int, init_var: float = 5.0, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, t_channels, 1, bias=False),
        )
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    @staticmethod
    def align(fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
        size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
        fs = fs if tuple(fs.shape[2:]) == size else F.adaptive_avg_pool2d(fs, size)
        ft = ft if tuple(ft.shape[2:]) == size else F.adaptive_avg_pool2d(ft, size)
        return fs, ft

    def forward(self, x: Tensor) -> Tensor:
        return self.regressor(x)


def _conv_block(c_in: int, c_out: int, bn: bool, transpose: bool = False) -> list[nn.Module]:
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(c_in, c_out, 3, 1, 1)
    return [conv, *([nn.BatchNorm2d(c_out)] if bn else []), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """FT's paraphraser (Kim et al. 2018; RepDistiller ``Paraphraser``): a convolutional
    auto-encoder of the teacher's feature, ``C -> C -> kC -> kC`` (3x3 convs + LeakyReLU 0.1, no BN)
    and back with transposed convs; ``k = 0.5``. :meth:`encode` gives the teacher factor."""

    def __init__(self, channels: int, rate: float = 0.5, use_bn: bool = False) -> None:
        super().__init__()
        mid = int(channels * rate)
        if mid < 1:
            raise ValueError(f"Paraphraser: {channels} channels x rate {rate} leaves no factor channel.")
        self.encoder = nn.Sequential(
            *_conv_block(channels, channels, use_bn),
            *_conv_block(channels, mid, use_bn),
            *_conv_block(mid, mid, use_bn),
        )
        self.decoder = nn.Sequential(
            *_conv_block(mid, mid, use_bn, True),
            *_conv_block(mid, channels, use_bn, True),
            *_conv_block(channels, channels, use_bn, True),
        )

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (trained with MSE in FT's first stage)."""
        return self.decoder(self.encoder(x))


class Translator(nn.Module):
    """FT's translator (RepDistiller ``Translator``): the student's feature to a factor of
    ``int(k · C_t)`` channels, three 3x3 convs with BN and LeakyReLU 0.1; ``k = 0.5``."""

    def __init__(self, s_channels: int, t_channels: int, rate: float = 0.5, use_bn: bool = True) -> None:
        super().__init__()
        out = int(t_channels * rate)
        self.encoder = nn.Sequential(
            *_conv_block(s_channels, s_channels, use_bn),
            *_conv_block(s_channels, out, use_bn),
            *_conv_block(out, out, use_bn),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ABF(nn.Module):
    """ReviewKD's attention-based fusion (Chen et al. 2021; mdistiller ``ABF``).

    ``x -> conv1x1 + BN`` to ``mid`` channels; with ``fuse``, the deeper level's residual ``y`` is
    nearest-upsampled to x's size and mixed in with two sigmoid attention maps from a 1x1 conv on
    ``cat(x, y)``; the result is resized (nearest) to ``out_size`` and mapped by ``conv3x3 + BN`` to
    the teacher's channels. Returns (output for the loss, residual for the next shallower level).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None and residual is not None:
            residual = F.interpolate(residual, (h, w), mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + residual * z[:, 1].view(n, 1, h, w)
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


class ContrastMemory(nn.Module):
    """CRD's memory bank (Tian et al. 2020; RepDistiller ``ContrastMemory``): one unit-norm
    embedding per training sample and side, updated with momentum, plus what exact resumption needs.

    Rows are indexed by the sample's row in the full training set (``size`` rows); ``rows`` lists
    the rows that train (all of them unless a validation split holds some out): negatives are drawn
    among those, and N = ``len(rows)`` is the NCE's data size.

    Buffers (in the checkpoint, so a resumed run continues with the same bank): ``memory_student``
    and ``memory_teacher`` (size, D), initialised uniform in ±1/sqrt(D/3) as the reference;
    ``labels`` (size,), each sample's class once seen (-1 before), for drawing negatives of other
    classes; ``rows`` (N,); ``normalizers`` [Z_s, Z_t], the NCE normalisation constants, fixed on
    the first batch to ``mean(exp(score / τ)) · N`` (-1 until then).
    """

    def __init__(
        self,
        dim: int,
        size: int,
        rows: list[int] | None = None,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        rows = list(range(size)) if rows is None else list(rows)
        if len(rows) < 2 or min(rows) < 0 or max(rows) >= size:
            raise ValueError(
                f"ContrastMemory: needs >= 2 training rows within [0, {size}), got {len(rows)} rows."
            )
        self.num_data, self.num_negatives = len(rows), int(num_negatives)
        self.temperature, self.momentum = float(temperature), float(momentum)
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_student", torch.rand(size, dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_teacher", torch.rand(size, dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.int64))
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.int64))
        self.register_buffer("normalizers", torch.full((2,), -1.0))

    def _draw(self, count: int | tuple[int, ...], device: torch.device) -> Tensor:
        shape = count if isinstance(count, tuple) else (count,)
        return self.rows[torch.randint(0, self.num_data, shape, device=device)]

    def negatives(self, index: Tensor, labels: Tensor, max_rounds: int = 64) -> Tensor:
        """(B, K) indices drawn uniformly with replacement among the samples of *other* classes
        (RepDistiller's CIFAR 'exact' sampler), by rejection: a draw of the anchor itself or of a
        sample known to share its class is redrawn. Before a sample has been seen its class is
        unknown and it counts as a negative (first epoch only)."""
        neg = self._draw((index.shape[0], self.num_negatives), index.device)
        for _ in range(max_rounds):
            bad = (neg == index[:, None]) | (self.labels[neg] == labels[:, None])
            if not bad.any():
                break
            neg[bad] = self._draw(int(bad.sum()), index.device)
        return neg

    def scores(self, v_s: Tensor, v_t: Tensor, index: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised scores ``exp(m · v / τ)`` (B, K+1) of each anchor against the *other*
        side's memory rows of (positive, negatives): (student anchors, teacher anchors)."""
        rows = torch.cat([index[:, None], negatives], dim=1)  # (B, K+1)
        # Each anchor against every memory row (B, size), then the drawn rows picked: the same dot
        # products as gathering (B, K+1, D) rows, without materialising them (2 × 1 GB a step at
        # B=128, K=16384, D=128; a CRD step on 2 CPU cores was 7.7 s, mostly that copy). The bank is
        # cloned (size × D) because backward needs it as it is now, and update() then changes it.
        out_s = torch.exp(torch.gather(v_s @ self.memory_teacher.detach().clone().T, 1, rows) / self.temperature)
        out_t = torch.exp(torch.gather(v_t @ self.memory_student.detach().clone().T, 1, rows) / self.temperature)
        return out_s, out_t

    @torch.no_grad()
    def update(self, v_s: Tensor, v_t: Tensor, index: Tensor, labels: Tensor) -> None:
        """Momentum update of the rows ``index``: ``m ← normalize(μ m + (1 - μ) v)``; record labels."""
        for memory, v in ((self.memory_student, v_s), (self.memory_teacher, v_t)):
            rows = memory[index].mul_(self.momentum).add_(v.detach().to(memory.dtype), alpha=1 - self.momentum)
            memory.index_copy_(0, index, F.normalize(rows, dim=1))
        self.labels.index_copy_(0, index, labels.to(self.labels.dtype))
