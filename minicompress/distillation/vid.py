"""Variational information distillation: maximize a Gaussian lower bound on I(teacher; student).

Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information Distillation for Knowledge
Transfer", CVPR 2019, arXiv:1904.05835. The mutual information between a teacher map t and a
student map s is bounded below by E[log q(t | s)] + H(t); with q a Gaussian whose mean μ(s) is
a small regressor on the student map and whose variance σ_c² is one learned number per
teacher channel, maximizing the bound means minimizing

    vid = mean over b, c, h, w of ½ · ((t − μ(s))² / σ_c² + log σ_c²)

Entry points:
    vid_loss(student_mean, student_variance, teacher_features, reduction="mean")
    VIDRegressor(student_channels, teacher_channels, hidden_channels=None,
                 init_variance=5.0, eps=1e-5)        student map -> (μ(s), σ²)

Shapes: maps (B, C, H, W), float; the variance (C_t,) or (1, C_t, 1, 1); teacher maps are
detached. The regressor's parameters, variances included, must be given to the optimizer.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_choice,
    check_int,
    check_real,
    check_same_shape,
    check_tensor,
)
from .feature import _check_maps

__all__ = ["vid_loss", "VIDRegressor", "VID_REDUCTIONS"]

VID_REDUCTIONS = ("mean", "batchmean")


def vid_loss(student_mean, student_variance, teacher_features, reduction="mean"):
    """VID: the Gaussian negative log-likelihood of the teacher's map given the student's.

    Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information Distillation for Knowledge
    Transfer", CVPR 2019, arXiv:1904.05835. With μ(s) and σ² from `VIDRegressor`, per
    element −log q(t | s) = ½ ((t − μ)² / σ_c² + log σ_c²) + ½ log 2π (the constant dropped):

        reduction="mean":      vid = (1/(B·C·H·W)) Σ ½ ((t − μ)² / σ_c² + log σ_c²)   (code)
        reduction="batchmean": vid = (1/B) Σ_b Σ_{c,h,w} (the same)                  (paper)

    and the trainer's total CE + Σ_k λ_k · vid_k over the tapped layers. A large σ_c² lets the
    student ignore a channel it cannot predict, at the price of log σ_c². The paper taps the
    output of every residual group (RepDistiller: all three, λ = 1).

    Note:
        The paper's bound sums the log-likelihood over the dimensions of t per sample
        ("batchmean"); the authors' code (via RepDistiller) and torchdistill's VIDLoss average
        over every element, C·H·W times smaller, and their λ = 1 is tuned for that. We default
        to the code's scale and keep the paper's as an option.

    Args:
        student_mean: (B, C, H, W) the regressor's mean μ(s).
        student_variance: (C,) or (1, C, 1, 1) positive variances σ².
        teacher_features: (B, C, H, W) the teacher's map t, the shape of the mean; detached.
        reduction: "mean" (default) or "batchmean".

    Returns:
        A scalar tensor, differentiable with respect to the mean and the variance.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: mean and teacher map of different shapes, a variance of another shape or
            not positive, non-finite values, an unknown reduction.

    Example:
        >>> import torch
        >>> t = torch.rand(2, 3, 4, 4)
        >>> print(f"{vid_loss(t, torch.ones(3), t):.4f}")  # exact mean, σ² = 1: log 1 = 0
        0.0000
    """
    _check_maps(student_mean, teacher_features, "student_mean", "teacher_features")
    check_same_shape(student_mean, teacher_features, "student_mean", "teacher_features")
    variance = _check_variance(student_variance, student_mean.shape[1])
    check_choice(reduction, "reduction", VID_REDUCTIONS)
    gap = teacher_features.detach() - student_mean
    nll = 0.5 * (gap.pow(2) / variance + variance.log())  # (B, C, H, W)
    if reduction == "mean":
        return nll.mean()
    return nll.flatten(1).sum(dim=1).mean()


class VIDRegressor(nn.Module):
    """VID's student-side Gaussian: three 1×1 convolutions for μ(s), a softplus for σ².

    μ(s) = conv1×1 → ReLU → conv1×1 → ReLU → conv1×1 (no biases), from C_s to C_t channels;
    σ_c² = softplus(α_c) + eps with α initialized so that every σ_c² starts at
    `init_variance` (the authors' code: 5.0, eps 1e-5). `forward` returns (μ(s), σ²) with σ²
    of shape (1, C_t, 1, 1), ready for `vid_loss`. The student map must already have the
    teacher map's spatial size (tap layers of one resolution, or pool first).

    Args:
        student_channels, teacher_channels: C_s, C_t, ints >= 1.
        hidden_channels: channels of the two hidden layers, an int >= 1; default C_t
            (RepDistiller).
        init_variance: the starting σ², a number > eps, default 5.0.
        eps: the variance floor, a number > 0, default 1e-5.

    Example:
        >>> import torch
        >>> mean, variance = VIDRegressor(8, 16)(torch.rand(2, 8, 4, 4))
        >>> print(tuple(mean.shape), f"{variance.flatten()[0]:.4f}")
        (2, 16, 4, 4) 5.0000
    """

    def __init__(
        self,
        student_channels,
        teacher_channels,
        hidden_channels=None,
        init_variance=5.0,
        eps=1e-5,
    ):
        super().__init__()
        check_int(student_channels, "student_channels", low=1)
        check_int(teacher_channels, "teacher_channels", low=1)
        hidden = teacher_channels if hidden_channels is None else hidden_channels
        check_int(hidden, "hidden_channels", low=1)
        self.eps = check_real(eps, "eps", low=0, low_open=True)
        init_variance = check_real(
            init_variance, "init_variance", low=self.eps, low_open=True
        )
        self.mean = nn.Sequential(
            nn.Conv2d(student_channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, teacher_channels, 1, bias=False),
        )
        # softplus(α) = init − eps  <=>  α = log(exp(init − eps) − 1)
        alpha = math.log(math.expm1(init_variance - self.eps))
        self.alpha = nn.Parameter(torch.full((teacher_channels,), alpha))

    def forward(self, student_features):
        variance = F.softplus(self.alpha) + self.eps
        return self.mean(student_features), variance.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------------


def _check_variance(variance, channels):
    check_tensor(variance, "student_variance", finite=True)
    if tuple(variance.shape) not in ((channels,), (1, channels, 1, 1)):
        raise ValueError(
            f"student_variance must have shape ({channels},) or (1, {channels}, 1, 1), one "
            f"value per teacher channel; got {tuple(variance.shape)}"
        )
    if not bool((variance > 0).all()):
        raise ValueError(
            "student_variance must be > 0 everywhere (use softplus(α) + eps)"
        )
    return variance.view(1, channels, 1, 1)
