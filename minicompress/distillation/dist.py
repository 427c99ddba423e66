"""DIST: distillation by correlation, for a student far weaker than its teacher.

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
arXiv:2205.10536. An exact match of the teacher's probabilities (the KL of `kd_loss`) is too
strict when the teacher is much stronger; DIST asks only that the student rank classes, and
samples, the way the teacher does, through the Pearson correlation ρ of softmax outputs:

    dist = τ² · (β · (1 − mean_b ρ(Y_s[b, :], Y_t[b, :]))      inter-class, per sample
                 + γ · (1 − mean_c ρ(Y_s[:, c], Y_t[:, c])))    intra-class, per class

Entry point (a scalar; the cross-entropy and the weight of this term belong to the trainer):
    dist_loss(student_logits, teacher_logits, beta=1.0, gamma=1.0, temperature=1.0)

Shapes: logits (B, C), float; the teacher's logits are detached.
"""

import torch.nn.functional as F

from .._checks import check_real
from .logit import _check_logits, _check_temperature

__all__ = ["dist_loss"]

# The Pearson correlation's guard against a zero-variance row (a uniform softmax), the value
# of the authors' code.
PEARSON_EPS = 1e-8


def dist_loss(student_logits, teacher_logits, beta=1.0, gamma=1.0, temperature=1.0):
    """DIST: τ² · (β · inter-class + γ · intra-class) Pearson relation loss.

    Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS
    2022, arXiv:2205.10536. With Y = softmax(z / τ) (B, C) and ρ(u, v) the Pearson
    correlation, the cosine of the mean-centred vectors:

        inter = 1 − (1/B) Σ_b ρ(Y_s[b, :], Y_t[b, :])    each sample's ranking of the classes
        intra = 1 − (1/C) Σ_c ρ(Y_s[:, c], Y_t[:, c])    each class's ranking of the samples
        dist  = τ² · (β · inter + γ · intra)

    A correlation, unlike a KL, ignores shifts and scales of the probabilities, so a student
    need not match a much stronger teacher's exact confidences. It is symmetric in student
    and teacher. The paper taps the final logits. The intra-class term correlates over the
    batch axis, so its value depends on the batch (it needs B >= 2 to mean anything).

    Note:
        As the authors' code (hunto/image_classification_sota): ρ = u·v / (‖u‖‖v‖ + 1e-8)
        after centring, τ² on both terms. An older copy of their loss has no τ at all;
        torchdistill's DISTLoss matches the τ² form. The paper's ImageNet total is
        CE + 2 · dist with τ = 1; its CIFAR-100 runs use τ = 4.

    Args:
        student_logits: (B, C) student logits.
        teacher_logits: (B, C) teacher logits, same shape; detached.
        beta: β >= 0, weight of the inter-class term, default 1.0 (paper).
        gamma: γ >= 0, weight of the intra-class term, default 1.0 (paper).
        temperature: τ > 0, default 1.0 (paper, ImageNet).

    Returns:
        A scalar tensor in [0, 2 τ² (β + γ)], differentiable with respect to `student_logits`.

    Raises:
        TypeError, ValueError: as `kd_loss`; beta or gamma < 0.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 2.0, 4.0], [3.0, 0.0, 1.0]])
        >>> print(f"{dist_loss(z, z).item():.4f}")  # identical logits: correlations of 1
        0.0000
    """
    _check_logits(student_logits, teacher_logits)
    tau = _check_temperature(temperature)
    beta = check_real(beta, "beta", low=0)
    gamma = check_real(gamma, "gamma", low=0)
    y_s = F.softmax(student_logits / tau, dim=1)
    y_t = F.softmax(teacher_logits.detach() / tau, dim=1)
    inter = 1 - _pearson(y_s, y_t).mean()  # rows: samples
    intra = 1 - _pearson(y_s.T, y_t.T).mean()  # rows: classes
    return tau**2 * (beta * inter + gamma * intra)


# ---------------------------------------------------------------------------------------------


def _pearson(u, v):
    # Pearson correlation of each row of u with the same row of v.
    u, v = u - u.mean(dim=1, keepdim=True), v - v.mean(dim=1, keepdim=True)
    return (u * v).sum(dim=1) / (u.norm(dim=1) * v.norm(dim=1) + PEARSON_EPS)
