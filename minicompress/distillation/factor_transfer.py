"""Factor transfer: match compressed "factors" of the teacher's and the student's last maps.

Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer",
NeurIPS 2018, arXiv:1802.04977. A teacher-side autoencoder, the paraphraser, is first trained
to reconstruct the teacher's last feature map through a bottleneck of rate k; its encoder's
output is the teacher factor F_T. A student-side translator maps the student's last map to a
student factor F_S, and

    ft = (1/B) Σ_b ‖ F_S,b / ‖F_S,b‖₂ − F_T,b / ‖F_T,b‖₂ ‖_p        (p = 1 in the paper)

Entry points:
    ft_loss(student_factor, teacher_factor, p=1)
    Paraphraser(channels, rate=0.5)          teacher side: .encode(F) -> factor, (F) -> rebuilt F
    Translator(student_channels, factor_channels)

Training (the trainer's): stage 1 fits the paraphraser alone on the teacher's maps with the
reconstruction error ‖F − Paraphraser(F)‖², then freezes it; stage 2 trains student and
translator with CE + β · ft. Shapes: maps and factors (B, C, H, W), float.
"""

from torch import nn

from .._checks import check_int, check_real, check_same_shape
from .feature import _check_maps

__all__ = ["ft_loss", "Paraphraser", "Translator"]

# The paraphraser's and translator's activation, as in the paper's code and every
# reimplementation: a leaky ReLU keeps the factor signed.
LEAK = 0.1


def ft_loss(student_factor, teacher_factor, p=1):
    """Factor transfer: the p-norm gap between the per-sample L2-normalized factors.

    Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor
    Transfer", NeurIPS 2018, arXiv:1802.04977. With factors vectorized per sample,

        ft = (1/B) Σ_b ‖ F_S,b / ‖F_S,b‖₂ − F_T,b / ‖F_T,b‖₂ ‖_p

    and the trainer's total CE + β · ft (β = 200 in RepDistiller's CIFAR-100 runs, 1000 in
    torchdistill's ImageNet config). The paper taps the last group's output map of both
    networks.

    Note:
        This is the paper's form, as torchdistill's FTLoss with reduction 'sum' / B (its
        default 'mean' also divides by the factor size when p = 1). RepDistiller first
        reduces each factor to an attention map (mean over channels of the square) and
        averages an L1 gap over positions, a different quantity.

    Args:
        student_factor: (B, C, H, W) the translator's output F_S (or any (B, ...)).
        teacher_factor: the paraphraser's encoding F_T, the same shape; detached.
        p: the norm of the gap, a number >= 1, default 1 (paper).

    Returns:
        A scalar tensor, differentiable with respect to `student_factor`.

    Raises:
        TypeError: a factor is not a tensor; p is not a number.
        ValueError: factors of different shapes or with non-finite values; p < 1.

    Example:
        >>> import torch
        >>> f = torch.rand(2, 4, 3, 3)
        >>> print(f"{ft_loss(3.0 * f, f):.4f}")  # the norm removes the scale
        0.0000
    """
    _check_maps(
        student_factor,
        teacher_factor,
        "student_factor",
        "teacher_factor",
        dims=(2, 3, 4),
    )
    check_same_shape(student_factor, teacher_factor, "student_factor", "teacher_factor")
    p = check_real(p, "p", low=1)
    f_s = student_factor.flatten(1)
    f_t = teacher_factor.detach().flatten(1)
    gap = f_s / f_s.norm(dim=1, keepdim=True) - f_t / f_t.norm(dim=1, keepdim=True)
    return gap.norm(p=p, dim=1).mean()


class Paraphraser(nn.Module):
    """FT's teacher-side autoencoder: three 3×3 convolutions down to rate·C channels, three up.

    Each convolution keeps the spatial size and is followed by BatchNorm and LeakyReLU(0.1).
    `encode` gives the teacher factor (B, round(rate·C), H, W); calling the module gives the
    reconstruction (B, C, H, W) that stage 1 fits to the teacher's map.

    Args:
        channels: C of the teacher's map, an int >= 1.
        rate: the paraphrase rate k in (0, 1], default 0.5 (paper).

    Example:
        >>> import torch
        >>> paraphraser = Paraphraser(8)
        >>> print(tuple(paraphraser.encode(torch.rand(2, 8, 4, 4)).shape))
        (2, 4, 4, 4)
    """

    def __init__(self, channels, rate=0.5):
        super().__init__()
        check_int(channels, "channels", low=1)
        rate = check_real(rate, "rate", low=0, high=1, low_open=True)
        factor = max(1, round(channels * rate))
        self.encoder = nn.Sequential(
            *_block(nn.Conv2d, channels, channels),
            *_block(nn.Conv2d, channels, factor),
            *_block(nn.Conv2d, factor, factor),
        )
        self.decoder = nn.Sequential(
            *_block(nn.ConvTranspose2d, factor, factor),
            *_block(nn.ConvTranspose2d, factor, channels),
            *_block(nn.ConvTranspose2d, channels, channels),
        )

    def encode(self, teacher_features):
        return self.encoder(teacher_features)

    def forward(self, teacher_features):
        return self.decoder(self.encoder(teacher_features))


class Translator(nn.Module):
    """FT's student-side translator: three 3×3 convolutions from C_s to the factor's channels.

    Args:
        student_channels: C_s of the student's map, an int >= 1.
        factor_channels: the channels of the paraphraser's factor, an int >= 1.

    Example:
        >>> import torch
        >>> print(tuple(Translator(6, 4)(torch.rand(2, 6, 4, 4)).shape))
        (2, 4, 4, 4)
    """

    def __init__(self, student_channels, factor_channels):
        super().__init__()
        check_int(student_channels, "student_channels", low=1)
        check_int(factor_channels, "factor_channels", low=1)
        self.translate = nn.Sequential(
            *_block(nn.Conv2d, student_channels, student_channels),
            *_block(nn.Conv2d, student_channels, factor_channels),
            *_block(nn.Conv2d, factor_channels, factor_channels),
        )

    def forward(self, student_features):
        return self.translate(student_features)


# ---------------------------------------------------------------------------------------------


def _block(conv, in_channels, out_channels):
    # A size-preserving 3×3 (transposed) convolution, BatchNorm, LeakyReLU.
    return (
        conv(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(LEAK),
    )
