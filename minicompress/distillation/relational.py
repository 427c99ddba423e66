"""Relational distillation: match how the samples of a batch relate to each other.

Instead of matching each sample's output, these losses build a (B, B) or (B, B, B) summary of
the batch (distances, angles, similarities, kernel values) in each network and match those,
so student and teacher embeddings may have different widths:

    RKD  Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, arXiv:1904.05068
    SP   Tung, Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, arXiv:1907.09682
    PKT  Passalis, Tefas, "Learning Deep Representations with Probabilistic Knowledge
         Transfer", ECCV 2018, arXiv:1803.10837
    CC   Peng, Jin, Liu, Zhou, Wu, Liu, Li, Zhang, "Correlation Congruence for Knowledge
         Distillation", ICCV 2019, arXiv:1904.01802

Entry points (each a scalar for one batch; the trainer weights them):
    rkd_distance_loss(student_embeddings, teacher_embeddings)
    rkd_angle_loss(student_embeddings, teacher_embeddings)
    sp_loss(student_features, teacher_features)
    pkt_loss(student_embeddings, teacher_embeddings, eps=1e-7)
    cc_loss(student_embeddings, teacher_embeddings, gamma=0.4, order=2)

Shapes: embeddings (B, D) (pooled penultimate features; RKD, PKT, CC) or feature maps
(B, C, H, W) (the last stage's map; SP), flattened to (B, ·) inside; B >= 2; the widths of
student and teacher may differ. Teacher tensors are detached.
"""

import math

import torch
import torch.nn.functional as F

from .._checks import check_int, check_real, check_same_size, check_tensor

__all__ = ["rkd_distance_loss", "rkd_angle_loss", "sp_loss", "pkt_loss", "cc_loss"]


def rkd_distance_loss(student_embeddings, teacher_embeddings):
    """RKD distance: match the batch's pairwise distances, each divided by their mean.

    Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, arXiv:1904.05068.
    With ψ_D(x_i, x_j) = ‖x_i − x_j‖₂ / μ, μ the mean distance over the pairs i ≠ j, and
    l_δ the Huber loss (smooth L1, δ = 1):

        rkd_distance = (1/B²) Σ_{i,j} l_δ(ψ_D(s_i, s_j), ψ_D(t_i, t_j))

    Dividing by μ makes the value ignore any scale or translation of either embedding. The
    trainer's total is CE + λ_D · rkd_distance + λ_A · rkd_angle, with the paper's λ_D = 1,
    λ_A = 2 on the final embeddings (RepDistiller: 25 and 50 on the pooled features).

    Note:
        The paper writes a sum over pairs; the authors' code averages over the B² entries
        (the zero diagonal included), as do RepDistiller and torchdistill. We follow the code.

    Args:
        student_embeddings: (B, D_s) (or (B, ...), flattened), B >= 2.
        teacher_embeddings: (B, D_t) teacher embeddings; detached.

    Returns:
        A scalar tensor, differentiable with respect to `student_embeddings`.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: fewer than 2 dimensions or samples, batch sizes that differ, non-finite
            values.

    Example:
        >>> import torch
        >>> e = torch.rand(5, 3)
        >>> print(f"{rkd_distance_loss(10 * e + 1, e):.4f}")
        0.0000
    """
    s, t = _check_embeddings(student_embeddings, teacher_embeddings)
    d_s, d_t = _distances(s), _distances(t)
    psi_s = d_s / d_s[d_s > 0].mean()
    psi_t = d_t / d_t[d_t > 0].mean()
    return F.smooth_l1_loss(psi_s, psi_t)


def rkd_angle_loss(student_embeddings, teacher_embeddings):
    """RKD angle: match the cosines of every angle formed by three samples of the batch.

    Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, arXiv:1904.05068.
    With e_ij = (x_i − x_j) / ‖x_i − x_j‖ and ψ_A(x_i, x_j, x_k) = ⟨e_ij, e_kj⟩ (the angle at
    x_j), l_δ the Huber loss:

        rkd_angle = (1/B³) Σ_{i,j,k} l_δ(ψ_A(s_i, s_j, s_k), ψ_A(t_i, t_j, t_k))

    Angles ignore scale and translation. The paper taps the final embeddings and weights this
    term by λ_A = 2 (see rkd_distance_loss).

    Note:
        A mean over the B³ entries (degenerate ones, with i = j or k = j, are 0 on both
        sides), as the authors' code; the paper writes a sum.

    Args, Returns, Raises: as `rkd_distance_loss`.

    Example:
        >>> import torch
        >>> e = torch.rand(5, 3)
        >>> print(f"{rkd_angle_loss(e, 0.1 * e - 2):.4f}")
        0.0000
    """
    s, t = _check_embeddings(student_embeddings, teacher_embeddings)
    return F.smooth_l1_loss(_angles(s), _angles(t))


def sp_loss(student_features, teacher_features):
    """Similarity-preserving KD: match the batch's row-normalized Gram matrices.

    Tung, Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, arXiv:1907.09682.
    With Q the flattened activations (B, C·H·W) and G = Q Qᵀ (B, B), each row of G divided
    by its L2 norm:

        sp = (1/B²) ‖G_s − G_t‖²_F

    and the trainer's total CE + γ · sp with γ = 3000, the paper's tap being the last
    stage's output map.

    Note:
        Rows are L2-normalized, as in the paper and in RepDistiller ("verified by the
        original author"). torchdistill's SPKDLoss calls `normalize(G, 1)`, whose second
        argument is the norm's order p, not the dimension: it divides by the L1 norm of each
        row, a different (smaller) value.

    Args:
        student_features: (B, C_s, H_s, W_s) or (B, D_s), B >= 2.
        teacher_features: (B, C_t, H_t, W_t) or (B, D_t); detached. Widths and sizes may differ.

    Returns:
        A scalar tensor, differentiable with respect to `student_features`.

    Raises:
        TypeError, ValueError: as `rkd_distance_loss`.

    Example:
        >>> import torch
        >>> f = torch.rand(4, 3, 2, 2)
        >>> print(f"{sp_loss(2.0 * f, f):.4f}")  # rescaling leaves G's rows' directions alone
        0.0000
    """
    s, t = _check_embeddings(student_features, teacher_features)
    g_s = F.normalize(s @ s.T, p=2, dim=1)  # (B, B), unit rows
    g_t = F.normalize(t @ t.T, p=2, dim=1)
    return (g_s - g_t).pow(2).sum() / s.shape[0] ** 2


def pkt_loss(student_embeddings, teacher_embeddings, eps=1e-7):
    """Probabilistic knowledge transfer: KL between cosine-kernel neighbour distributions.

    Passalis, Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
    ECCV 2018, arXiv:1803.10837. With the cosine kernel K(a, b) = (cos(a, b) + 1) / 2 and the
    conditional probabilities p_{j|i} = K(x_i, x_j) / Σ_k K(x_i, x_k) in each network,

        pkt = (1/B²) Σ_{i,j} p^t_{j|i} · log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))

    a KL from teacher to student per row, averaged over the B² entries. The paper taps the
    penultimate (pooled) features; RepDistiller and torchdistill weight it by 30000.

    Note:
        As the authors' code (used unchanged by RepDistiller, mdistiller and torchdistill):
        the sums include k = i and j = i, and the KL is averaged over B² entries with eps
        inside the log. The paper's equations leave out j = i and sum instead. Their code also
        replaces NaNs from zero vectors by 0; ours cannot produce any (the norm gets + eps),
        and non-finite input is refused.

    Args:
        student_embeddings: (B, D_s) (or (B, ...), flattened), B >= 2.
        teacher_embeddings: (B, D_t); detached.
        eps: the guard in the norms and the log, a number > 0, default 1e-7 (authors' code).

    Returns:
        A scalar tensor, differentiable with respect to `student_embeddings`.

    Raises:
        TypeError, ValueError: as `rkd_distance_loss`; eps <= 0.

    Example:
        >>> import torch
        >>> e = torch.rand(4, 6)
        >>> print(f"{abs(pkt_loss(3.0 * e, e).item()):.4f}")  # cosines ignore the scale
        0.0000
    """
    s, t = _check_embeddings(student_embeddings, teacher_embeddings)
    eps = check_real(eps, "eps", low=0, low_open=True)
    p_s, p_t = _neighbour_probabilities(s, eps), _neighbour_probabilities(t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def cc_loss(student_embeddings, teacher_embeddings, gamma=0.4, order=2):
    """Correlation congruence: match the batch's Gaussian-kernel correlation matrices.

    Peng, Jin, Liu, Zhou, Wu, Liu, Li, Zhang, "Correlation Congruence for Knowledge
    Distillation", ICCV 2019, arXiv:1904.01802. With the embeddings L2-normalized and the
    Gaussian RBF kernel exp(−γ ‖f_i − f_j‖²) = e^(−2γ) · exp(2γ f_iᵀf_j) expanded to order P,

        ψ_ij = Σ_{p=0..P} e^(−2γ) (2γ)^p / p! · (f_iᵀ f_j)^p          ψ (B, B)
        cc   = (1/B²) ‖ψ_s − ψ_t‖²_F

    and the paper's total CE + KD + β · cc on the (linearly embedded) penultimate features.

    Note:
        The expansion equals the RBF kernel only for unit-norm embeddings, so we normalize
        them first, as reimplementations such as FaceX-Zoo's KDF losses do. torchdistill's
        CCKDLoss uses the same kernel on unnormalized embeddings and the unsquared norm;
        RepDistiller's `Correlation` ("the authors shared the code") computes a different
        quantity, products of gaps between adjacent samples.

    Args:
        student_embeddings: (B, D_s) (or (B, ...), flattened), B >= 2.
        teacher_embeddings: (B, D_t); detached.
        gamma: γ > 0, default 0.4 (paper).
        order: P, the Taylor order, an int >= 0, default 2 (paper).

    Returns:
        A scalar tensor, differentiable with respect to `student_embeddings`.

    Raises:
        TypeError, ValueError: as `rkd_distance_loss`; gamma <= 0; order < 0.

    Example:
        >>> import torch
        >>> e = torch.rand(4, 6)
        >>> print(f"{cc_loss(5.0 * e, e):.4f}")  # normalized first: the scale is ignored
        0.0000
    """
    s, t = _check_embeddings(student_embeddings, teacher_embeddings)
    gamma = check_real(gamma, "gamma", low=0, low_open=True)
    order = check_int(order, "order", low=0)
    psi_s, psi_t = _rbf_taylor(s, gamma, order), _rbf_taylor(t, gamma, order)
    return (psi_s - psi_t).pow(2).sum() / s.shape[0] ** 2


# ---------------------------------------------------------------------------------------------


def _distances(x):
    # Pairwise Euclidean distances (B, B) from exact differences: the diagonal is exactly 0
    # (the |a|² + |b|² − 2ab form is not), and the gradient there is taken as 0.
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def _angles(x):
    # cos of the angle at x_j between x_i and x_k, for all (i, j, k): (B, B, B).
    # e[j, i] = (x_i − x_j) / ‖x_i − x_j‖ (a zero vector where i = j).
    e = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)
    return e @ e.transpose(1, 2)


def _neighbour_probabilities(x, eps):
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    kernel = (x @ x.T + 1) / 2  # cosine kernel in [0, 1]
    return kernel / kernel.sum(dim=1, keepdim=True)


def _rbf_taylor(x, gamma, order):
    x = F.normalize(x, p=2, dim=1)
    gram = x @ x.T
    terms = [(2 * gamma) ** p / math.factorial(p) * gram**p for p in range(order + 1)]
    return math.exp(-2 * gamma) * sum(terms)


def _check_embeddings(student, teacher):
    # Both (B, ...) with B >= 2 and finite; returns them flattened to (B, ·), the teacher
    # detached.
    check_tensor(student, "student_embeddings", dims=(2, 3, 4), finite=True)
    check_tensor(teacher, "teacher_embeddings", dims=(2, 3, 4), finite=True)
    check_same_size(student, teacher, "student_embeddings", "teacher_embeddings")
    if student.shape[0] < 2:
        raise ValueError(
            f"relational losses compare the samples of a batch: give at least 2, got "
            f"student_embeddings of shape {tuple(student.shape)}"
        )
    return student.flatten(1), teacher.detach().flatten(1)
