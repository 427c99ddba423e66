"""Hint losses: a student layer, through a small learned adapter, regressed onto a teacher layer.

    FitNets  Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep
             Nets", ICLR 2015, arXiv:1412.6550
             fitnet = (1/B) Σ_b ½ ‖u_h − r(v_g)‖²    (teacher "hint" u_h, student "guided" v_g)
    AB       Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries
             Formed by Hidden Neurons", AAAI 2019, arXiv:1811.03233
             ab = (1/B) Σ (m + r)² [r > −m, t ≤ 0] + (m − r)² [r ≤ m, t > 0]   on pre-ReLU maps

Entry points (each returns its own term, a scalar averaged over the batch):
    fitnet_loss(student_hint, teacher_hint)          student_hint = HintRegressor(...)(v_g)
    ab_loss(student_features, teacher_features, margin=1.0)   student side = Connector(...)(s)
    HintRegressor(student_channels, teacher_channels, student_size, teacher_size, relu=True)
    Connector(student_channels, teacher_channels)

The adapters live on the student side, are trained with it (give their parameters to the
optimizer) and are thrown away afterwards; they are not part of the deployed student.
Shapes: feature maps (B, C, H, W), float; teacher maps are detached.
"""

from torch import nn
from torch.nn.modules.utils import _pair

from .._checks import check_bool, check_int, check_real, check_same_shape
from .feature import _check_maps

__all__ = ["fitnet_loss", "HintRegressor", "ab_loss", "Connector"]


def fitnet_loss(student_hint, teacher_hint):
    """FitNets hint loss: ½ ‖u_h − r(v_g)‖², summed per sample and averaged over the batch.

    Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets",
    ICLR 2015, arXiv:1412.6550. With u_h the teacher's "hint" layer, v_g the student's
    "guided" layer (both in the middle of the networks, the paper's choice) and r a
    convolutional regressor on the student side (`HintRegressor`),

        fitnet = (1/B) Σ_b ½ ‖u_h,b − r(v_g,b)‖²_F

    Stage 1 (the paper's default) trains the student up to v_g together with r on this term
    alone; stage 2 trains the whole student with KD. The single-stage variant adds
    w · fitnet to CE (+ KD). Both schedules are the trainer's; this is the term.

    Note:
        RepDistiller and mdistiller train single-stage with CE + 100 · MSE, the MSE averaged
        over B·C·H·W (ours is C·H·W / 2 times larger); torchdistill's faithful two-stage
        config sums over the batch too (MSE 'sum', 2B times ours).

    Args:
        student_hint: (B, C, H, W) the regressor's output r(v_g) (or (B, D) vectors).
        teacher_hint: the teacher's hint u_h, the same shape; detached.

    Returns:
        A scalar tensor, differentiable with respect to `student_hint`.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: tensors of different shapes (apply the `HintRegressor` first) or with
            non-finite values.

    Example:
        >>> import torch
        >>> print(f"{fitnet_loss(torch.ones(2, 3, 1, 1), torch.zeros(2, 3, 1, 1)):.4f}")
        1.5000
    """
    _check_maps(
        student_hint, teacher_hint, "student_hint", "teacher_hint", dims=(2, 3, 4)
    )
    check_same_shape(student_hint, teacher_hint, "student_hint", "teacher_hint")
    gap = student_hint - teacher_hint.detach()
    return 0.5 * gap.pow(2).flatten(1).sum(dim=1).mean()


class HintRegressor(nn.Module):
    """FitNets' regressor r: a student map (C_s, H_s, W_s) to the teacher's (C_t, H_t, W_t).

    The paper's rule: a convolution without padding whose kernel is H_s − H_t + 1 by
    W_s − W_t + 1, so the output has the teacher's size; a transposed convolution of kernel
    H_t − H_s + 1 where the student map is the smaller. It ends in a ReLU because the paper
    asks r to share the hint layer's non-linearity (stage outputs of ReLU networks); pass
    relu=False for a pre-activation hint.

    Args:
        student_channels, teacher_channels: C_s, C_t, ints >= 1.
        student_size, teacher_size: (H, W) of the two maps, or one int for a square map.
        relu: end with a ReLU, default True.

    Example:
        >>> import torch
        >>> r = HintRegressor(8, 16, student_size=8, teacher_size=6)
        >>> print(tuple(r(torch.rand(2, 8, 8, 8)).shape))
        (2, 16, 6, 6)
    """

    def __init__(
        self, student_channels, teacher_channels, student_size, teacher_size, relu=True
    ):
        super().__init__()
        check_int(student_channels, "student_channels", low=1)
        check_int(teacher_channels, "teacher_channels", low=1)
        sizes = [_pair(size) for size in (student_size, teacher_size)]
        for name, size in zip(("student_size", "teacher_size"), sizes):
            for side in size:
                check_int(side, name, low=1)
        (h_s, w_s), (h_t, w_t) = sizes
        if (h_s - h_t) * (w_s - w_t) < 0:
            raise ValueError(
                f"student_size {sizes[0]} must be at least teacher_size {sizes[1]} in both "
                "dimensions or at most it in both"
            )
        if h_s >= h_t and w_s >= w_t:  # shrink: valid convolution
            conv = nn.Conv2d(
                student_channels, teacher_channels, (h_s - h_t + 1, w_s - w_t + 1)
            )
        else:  # grow: valid transposed convolution
            kernel = (h_t - h_s + 1, w_t - w_s + 1)
            conv = nn.ConvTranspose2d(student_channels, teacher_channels, kernel)
        self.regress = nn.Sequential(
            conv, nn.ReLU() if check_bool(relu, "relu") else nn.Identity()
        )

    def forward(self, student_features):
        return self.regress(student_features)


def ab_loss(student_features, teacher_features, margin=1.0):
    """Activation-boundary transfer: push each student neuron to the teacher's side of zero.

    Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed
    by Hidden Neurons", AAAI 2019, arXiv:1811.03233. On *pre-ReLU* maps, with r the student's
    map after the `Connector` and t the teacher's, a squared hinge with margin m:

        ab = (1/B) Σ_{b,c,h,w} (m + r)² · [r > −m and t <= 0] + (m − r)² · [r <= m and t > 0]

    zero once every student neuron is active (by at least m) exactly where the teacher's is.
    The paper taps the pre-ReLU output of each residual group and uses the term as an
    initialization stage before ordinary training (the trainer's).

    Note:
        As the authors' code (via RepDistiller) and torchdistill's AltActTransferLoss
        ('mean' = sum / B). RepDistiller weights its layers by 2^(i−n+1) and scales the sum by
        3/1000 during its 30 initialization epochs.

    Args:
        student_features: (B, C, H, W) student pre-ReLU map after the Connector (or (B, D)).
        teacher_features: the teacher's pre-ReLU map, the same shape; detached.
        margin: m >= 0, default 1.0 (paper).

    Returns:
        A scalar tensor, differentiable with respect to `student_features`.

    Raises:
        TypeError: a map is not a tensor; margin is not a number.
        ValueError: maps of different shapes or with non-finite values; margin < 0.

    Example:
        >>> import torch
        >>> r, t = torch.tensor([[2.0, -3.0]]), torch.tensor([[0.5, -0.1]])
        >>> print(f"{ab_loss(r, t):.4f}")  # both on the teacher's side by more than m = 1
        0.0000
    """
    _check_maps(student_features, teacher_features, dims=(2, 3, 4))
    check_same_shape(
        student_features, teacher_features, "student_features", "teacher_features"
    )
    m = check_real(margin, "margin", low=0)
    r, active = student_features, teacher_features.detach() > 0
    wrongly_on = (m + r).pow(2) * (~active & (r > -m))
    wrongly_off = (m - r).pow(2) * (active & (r <= m))
    return (wrongly_on + wrongly_off).flatten(1).sum(dim=1).mean()


class Connector(nn.Module):
    """AB's connector: a 1×1 convolution and BatchNorm from C_s to C_t channels, no ReLU.

    Args:
        student_channels, teacher_channels: C_s, C_t, ints >= 1.

    Example:
        >>> import torch
        >>> print(tuple(Connector(8, 16)(torch.rand(2, 8, 4, 4)).shape))
        (2, 16, 4, 4)
    """

    def __init__(self, student_channels, teacher_channels):
        super().__init__()
        check_int(student_channels, "student_channels", low=1)
        check_int(teacher_channels, "teacher_channels", low=1)
        self.connect = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
            nn.BatchNorm2d(teacher_channels),
        )

    def forward(self, student_features):
        return self.connect(student_features)
