"""Learned connectors between student and teacher features.

:class:`HintRegressor` is the FitNets regressor (Romero et al. 2015): it maps a student feature map
(C_s, H_s, W_s) to the teacher's (C_t, H_t, W_t) so :func:`kdexp.losses.hint_loss` can compare them.
It trains with the student (its parameters belong in the student's optimizer).
"""

from __future__ import annotations

from collections.abc import Sequence

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

