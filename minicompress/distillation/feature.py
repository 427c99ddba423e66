"""Feature-map distillation without learned parts: attention maps, FSP matrices, NST kernels.

Each loss turns an intermediate feature map into a summary whose shape does not depend on the
channel count, so a thin student can match a wide teacher without an adapter:

    AT   Zagoruyko, Komodakis, "Paying More Attention to Attention", ICLR 2017, arXiv:1612.03928
         Q(F) = vec(mean_c |F_c|^p), L2-normalized per sample; match Q_s to Q_t
    FSP  Yim, Joo, Bae, Kim, "A Gift From Knowledge Distillation: Fast Optimization, Network
         Minimization and Transfer Learning", CVPR 2017 (no arXiv id)
         G(F¹, F²) = F¹ᵀ F² / (H·W), a (C1, C2) "flow" between two layers; match G_s to G_t
    NST  Huang, Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
         arXiv:1707.01219, 2017
         each channel's spatial map is a sample; match the two sets of samples by squared MMD

Entry points (each returns its own term for one tapped layer, a scalar averaged over the
batch; the trainer sums the layers and weights the terms):
    at_loss(student_features, teacher_features, p=2.0, mode="code")
    fsp_loss(student_first, student_second, teacher_first, teacher_second)
    nst_loss(student_features, teacher_features)

Shapes: feature maps (B, C, H, W), float; student and teacher channel counts may differ (FSP
excepted). Where the spatial sizes differ, the larger map is average-pooled to the smaller
(`F.adaptive_avg_pool2d`, as RepDistiller and mdistiller do). Teacher maps are detached.
"""

import torch.nn.functional as F

from .._checks import check_choice, check_real, check_same_size, check_tensor

__all__ = ["at_loss", "fsp_loss", "nst_loss", "AT_MODES"]

AT_MODES = ("code", "paper")


def at_loss(student_features, teacher_features, p=2.0, mode="code"):
    """Attention transfer: match the L2-normalized spatial attention maps of two layers.

    Zagoruyko, Komodakis, "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer", ICLR 2017, arXiv:1612.03928. The
    attention map of a feature map F (B, C, H, W) is Q(F) = vec(mean_c |F_c|^p) (B, H·W),
    divided by its L2 norm per sample; then

        mode="code":  at = (1/(B·H·W)) Σ_b ‖Q_s,b − Q_t,b‖²     (the authors' code, default)
        mode="paper": at = (1/B) Σ_b ‖Q_s,b − Q_t,b‖₂          (the paper's eq. 2, p-norm p=2)

    The trainer's total is CE + (β/2) Σ_j at_j over the tapped layers j: the paper taps the
    output of every residual group (three for a WRN) with β = 1000 in the code form. Because
    Q is normalized, the value ignores any positive rescaling of either feature map, and
    summing or averaging over channels gives the same map.

    Note:
        The paper writes the unsquared norm; the authors' code (attention-transfer/utils.py),
        which produced every published number, squares the difference and averages over B·H·W.
        The two differ by more than a constant, so we keep both and default to the code form,
        the one every benchmark used (torchdistill's ATLoss has the same two modes).
        RepDistiller weights the sum over layers by β = 1000 without the 1/2.

    Args:
        student_features: (B, C_s, H_s, W_s) student feature map.
        teacher_features: (B, C_t, H_t, W_t) teacher feature map; detached. Channels may
            differ; the larger spatial size is average-pooled to the smaller.
        p: exponent of |F_c|, a number > 0, default 2.0 (paper).
        mode: "code" (default) or "paper", see above.

    Returns:
        A scalar tensor, differentiable with respect to `student_features`.

    Raises:
        TypeError: a feature map is not a tensor; p is not a number.
        ValueError: maps that are not 4-D, with different batch sizes or non-finite values;
            p <= 0; an unknown mode.

    Example:
        >>> import torch
        >>> f = torch.rand(2, 3, 4, 4)
        >>> print(f"{at_loss(5.0 * f, torch.cat([f, f], dim=1)):.4f}")  # same attention
        0.0000
    """
    _check_maps(student_features, teacher_features)
    p = check_real(p, "p", low=0, low_open=True)
    check_choice(mode, "mode", AT_MODES)
    f_s, f_t = _pool_to_smaller(student_features, teacher_features.detach())
    q_s, q_t = _attention(f_s, p), _attention(f_t, p)  # (B, H·W), unit norm per sample
    if mode == "code":
        return (q_s - q_t).pow(2).mean()
    return (q_s - q_t).norm(dim=1).mean()


def fsp_loss(student_first, student_second, teacher_first, teacher_second):
    """FSP: match the "flow of solution procedure" matrices between two layers.

    Yim, Joo, Bae, Kim, "A Gift From Knowledge Distillation: Fast Optimization, Network
    Minimization and Transfer Learning", CVPR 2017 (CVF open access; no arXiv id). For the
    first and second map of a section, F¹ (B, C1, H, W) and F² (B, C2, H, W),

        G_ij = (1/(H·W)) Σ_{h,w} F¹_{i,h,w} · F²_{j,h,w}          G (B, C1, C2)
        fsp  = (1/B) Σ_b ‖G_s,b − G_t,b‖²_F

    The paper taps the input and output of each residual section, sums the sections with
    equal weights λ_i, and uses the term alone as an initialization stage before ordinary
    training: the two stages are the trainer's.

    Note:
        The paper's squared Frobenius norm per sample, averaged over the batch. RepDistiller
        averages over C1·C2 as well (a term C1·C2 times smaller); torchdistill's FSPLoss sums
        unsquared column norms. Where the two maps of one network differ in size (consecutive
        stages), the larger is average-pooled to the smaller, as RepDistiller does
        (torchdistill max-pools).

    Args:
        student_first, student_second: (B, C1, H, W) and (B, C2, H', W') student maps.
        teacher_first, teacher_second: (B, C1, ., .) and (B, C2, ., .) teacher maps, the same
            channel counts as the student's; detached.

    Returns:
        A scalar tensor, differentiable with respect to the student maps.

    Raises:
        TypeError: a map is not a tensor.
        ValueError: maps that are not 4-D, with different batch sizes or non-finite values;
            student and teacher channel counts that differ.

    Example:
        >>> import torch
        >>> ones = torch.ones(1, 1, 2, 2)  # G = 2 · 1 for the student, 3 · 1 for the teacher
        >>> print(f"{fsp_loss(ones, 2 * ones, ones, 3 * ones):.4f}")
        1.0000
    """
    _check_maps(
        student_first, teacher_first, "student_first", "teacher_first", channels=True
    )
    _check_maps(
        student_second,
        teacher_second,
        "student_second",
        "teacher_second",
        channels=True,
    )
    check_same_size(student_first, student_second, "student_first", "student_second")
    g_s = _fsp_matrix(student_first, student_second)
    g_t = _fsp_matrix(teacher_first.detach(), teacher_second.detach())
    return (g_s - g_t).pow(2).sum(dim=(1, 2)).mean()


def nst_loss(student_features, teacher_features):
    """Neuron selectivity transfer: squared MMD between the two sets of channel maps.

    Huang, Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
    arXiv:1707.01219, 2017. Each channel's spatial map, flattened and L2-normalized, is one
    sample f (H·W,); with the polynomial kernel k(a, b) = (aᵀb)² (d = 2, c = 0, the paper's
    best) and C_s, C_t channels,

        mmd² = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 · mean_{i,j} k(s_j, t_i)
        nst  = (1/B) Σ_b mmd²_b

    with the trainer's total CE + (λ/2) Σ_layers nst. The teacher–teacher term has no
    gradient but keeps the value an MMD (zero when the maps match). The paper taps the
    output of the last residual group; RepDistiller taps every group with λ/2 = 50.

    Note:
        As RepDistiller and mdistiller; normalizing each channel over positions makes the value
        ignore any positive rescaling of a channel.

    Args:
        student_features: (B, C_s, H_s, W_s) student feature map.
        teacher_features: (B, C_t, H_t, W_t) teacher feature map; detached. Channels may
            differ; the larger spatial size is average-pooled to the smaller.

    Returns:
        A scalar tensor, differentiable with respect to `student_features`.

    Raises:
        TypeError: a feature map is not a tensor.
        ValueError: maps that are not 4-D, with different batch sizes or non-finite values.

    Example:
        >>> import torch
        >>> f = torch.rand(2, 3, 4, 4)
        >>> print(f"{abs(nst_loss(f, 2.0 * f).item()):.4f}")  # same selectivity patterns
        0.0000
    """
    _check_maps(student_features, teacher_features)
    f_s, f_t = _pool_to_smaller(student_features, teacher_features.detach())
    s = F.normalize(f_s.flatten(2), dim=2)  # (B, C_s, H·W), each channel of unit norm
    t = F.normalize(f_t.flatten(2), dim=2)  # (B, C_t, H·W)
    k_tt = (t @ t.transpose(1, 2)).pow(2).mean()
    k_ss = (s @ s.transpose(1, 2)).pow(2).mean()
    k_st = (s @ t.transpose(1, 2)).pow(2).mean()
    return k_tt + k_ss - 2 * k_st


# ---------------------------------------------------------------------------------------------


def _attention(features, p):
    # Q(F) = vec(mean_c |F_c|^p), then unit L2 norm per sample (F.normalize guards 0 maps).
    return F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def _fsp_matrix(first, second):
    first, second = _pool_to_smaller(first, second)
    hw = first.shape[2] * first.shape[3]
    return first.flatten(2) @ second.flatten(2).transpose(1, 2) / hw  # (B, C1, C2)


def _pool_to_smaller(a, b):
    # Average-pool whichever map is larger (per spatial dimension) to the smaller's size.
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    a = a if tuple(a.shape[2:]) == size else F.adaptive_avg_pool2d(a, size)
    b = b if tuple(b.shape[2:]) == size else F.adaptive_avg_pool2d(b, size)
    return a, b


def _check_maps(
    student,
    teacher,
    student_name="student_features",
    teacher_name="teacher_features",
    channels=False,
    dims=4,
):
    # The rules every feature-map loss shares: 4-D finite maps of one batch (and, where the
    # loss compares channel by channel, the same channel count).
    check_tensor(student, student_name, dims=dims, finite=True)
    check_tensor(teacher, teacher_name, dims=dims, finite=True)
    check_same_size(student, teacher, student_name, teacher_name)
    if channels:
        check_same_size(
            student, teacher, student_name, teacher_name, 1, "channel count"
        )
