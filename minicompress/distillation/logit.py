"""Logit distillation losses: the student's class distribution pulled towards the teacher's.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning
Workshop, arXiv:1503.02531, and two later refinements of the same KL term. With
p^τ = softmax(z / τ) row by row and B the batch size,

    kd       = τ² · (1/B) Σ_b KL(p_t,b^τ ‖ p_s,b^τ),      KL(p ‖ q) = Σ_c p_c log(p_c / q_c)
    dkd      = τ² · (α · TCKD + β · NCKD)                   (KD split at the target class)
    logit_std_kd = kd on per-sample standardized logits (z − z̄) / std(z)

Entry points (each returns only its own term, a scalar averaged over the batch; the
cross-entropy and the weights between terms belong to the trainer):
    kd_loss(student_logits, teacher_logits, temperature=4.0)
    dkd_loss(student_logits, teacher_logits, targets, alpha=1.0, beta=8.0, temperature=4.0)
    logit_std_kd_loss(student_logits, teacher_logits, temperature=2.0)

Shapes: logits (B, C), float; targets (B,) integer class indices. The teacher's logits are
detached inside every loss.

Where sources disagree: several original repositories call `nn.KLDivLoss()` with its default
reduction 'mean', which divides by B·C instead of B, a term C times smaller that they then
compensate with ad-hoc multipliers. We always sum over classes and average over the batch
('batchmean'), the reduction that makes the value a KL divergence per sample.
"""

import torch
import torch.nn.functional as F

from .._checks import check_labels, check_real, check_same_shape, check_tensor

__all__ = ["kd_loss", "dkd_loss", "logit_std_kd_loss"]

# Logit standardization divides by std + 1e-7 (the authors' code): constant logits give 0.
STD_EPS = 1e-7


def kd_loss(student_logits, teacher_logits, temperature=4.0):
    """Hinton knowledge distillation: τ² · KL(p_t^τ ‖ p_s^τ), averaged over the batch.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep
    Learning Workshop, arXiv:1503.02531. With p^τ = softmax(z / τ),

        kd = τ² · (1/B) Σ_b Σ_c p_t,bc^τ · (log p_t,bc^τ − log p_s,bc^τ)

    and the trainer's total is w_ce · CE(z_s, y) + w_kd · kd, the cross-entropy at τ = 1.
    The KL runs from the teacher to the student (the teacher's distribution weights the log
    ratio), summed over classes and averaged over the batch ('batchmean'). The student enters
    through log_softmax (never the log of a softmax); the teacher is detached. The paper taps
    the final logits of both networks.

    Why τ²: the gradient of the soft term with respect to a student logit is
    τ · (p_s^τ − p_t^τ) / B, whose size falls as 1/τ² at high τ (paper §2), so τ² keeps the
    soft term's gradient on the scale of the cross-entropy's whatever τ is chosen.

    Note:
        Common code differs in two ways. Several original repositories (Tf-KD, TAKD,
        knowledge-distillation-pytorch) use `nn.KLDivLoss()`'s default 'mean', which divides
        by B·C, a term C times smaller; we use 'batchmean', the KL per sample. The PyTorch
        tutorial writes the soft cross-entropy −Σ p_t log p_s, which has the same gradient but
        a value larger by τ² · H(p_t); we return the KL, which is zero when the student
        matches the teacher. torchdistill's KDLoss drops τ² when its `alpha` is 0; ours
        always multiplies by τ².

    Args:
        student_logits: (B, C) student logits z_s.
        teacher_logits: (B, C) teacher logits z_t, same shape; detached.
        temperature: τ > 0, default 4.0 (the CIFAR-100 setting of RepDistiller and mdistiller;
            Hinton et al. used 20 on MNIST).

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError: a logit argument is not a tensor, or temperature is not a number.
        ValueError: logits that are not 2-D, of different shapes (class counts or batch
            sizes), holding NaN or inf; temperature <= 0, NaN or inf.

    Example:
        >>> import torch
        >>> z_s = torch.tensor([[1.0, 2.0, 3.0]])
        >>> print(f"{kd_loss(z_s, z_s + 5.0).item():.4f}")  # a shift changes no probability
        0.0000
    """
    _check_logits(student_logits, teacher_logits)
    tau = _check_temperature(temperature)
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    return tau**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def dkd_loss(
    student_logits, teacher_logits, targets, alpha=1.0, beta=8.0, temperature=4.0
):
    """Decoupled KD: τ² · (α · TCKD + β · NCKD), the KD term split at the target class.

    Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022,
    arXiv:2203.08679. For each sample with label y, at temperature τ:

        b = (p_y, 1 − p_y)                     target vs all other classes, a 2-class split
        p̂ = softmax over the C − 1 other classes of z / τ
        TCKD = KL(b_t ‖ b_s),   NCKD = KL(p̂_t ‖ p̂_s)
        dkd = τ² · (1/B) Σ_b (α · TCKD_b + β · NCKD_b)

    Classical KD is exactly KL(p_t ‖ p_s) = TCKD + (1 − p_t,y) · NCKD per sample: KD weights
    the non-target knowledge by the teacher's doubt, which DKD replaces by a free β. Both KLs
    run teacher to student, summed over their classes, averaged over the batch; the paper taps
    the final logits. The trainer's total is w_ce · CE + w(e) · dkd with the paper's linear
    warm-up w(e) = min(e / 20, 1) over the first 20 epochs (CIFAR).

    Note:
        The authors' code (mdistiller) takes the log of summed probabilities for b (log 0 for
        very peaked logits) and masks the target by subtracting 1000 from its logit. We get
        log(1 − p_y) as a log-sum-exp of the other log-probabilities and drop the target
        column, which gives the same value without either assumption.

    Args:
        student_logits: (B, C) student logits, C >= 2.
        teacher_logits: (B, C) teacher logits, same shape; detached.
        targets: (B,) integer labels in [0, C).
        alpha: α >= 0, the weight of TCKD, default 1.0 (paper).
        beta: β >= 0, the weight of NCKD, default 8.0 (the paper's CIFAR-100 value for most
            pairs; 2 or 6 for some, 0.5 to 2 on ImageNet).
        temperature: τ > 0, default 4.0 (CIFAR-100; 1 on ImageNet).

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError: non-tensor logits or targets, float targets, non-numeric hyperparameters.
        ValueError: as `kd_loss`; fewer than 2 classes; targets of the wrong length or out of
            range; alpha or beta < 0.

    Example:
        >>> import torch
        >>> z_s, z_t, y = torch.zeros(1, 3), torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
        >>> print(f"{dkd_loss(z_s, z_t, y, beta=0.0) / 4**2:.4f}")  # TCKD: KL of (p_y, 1 - p_y)
        0.0302
    """
    _check_logits(student_logits, teacher_logits, targets, min_classes=2)
    tau = _check_temperature(temperature)
    alpha = check_real(alpha, "alpha", low=0)
    beta = check_real(beta, "beta", low=0)
    z_s, z_t = student_logits / tau, teacher_logits.detach() / tau
    is_target = F.one_hot(targets, z_s.shape[1]).bool()
    # 1. TCKD: KL between the binary (target, not target) distributions
    tckd = _kl(_log_binary(z_s, is_target), _log_binary(z_t, is_target))
    # 2. NCKD: KL between the distributions over the C − 1 other classes
    others = (z_s.shape[0], z_s.shape[1] - 1)
    log_q_s = F.log_softmax(z_s[~is_target].view(others), dim=1)
    log_q_t = F.log_softmax(z_t[~is_target].view(others), dim=1)
    nckd = _kl(log_q_s, log_q_t)
    return tau**2 * (alpha * tckd + beta * nckd)


def logit_std_kd_loss(student_logits, teacher_logits, temperature=2.0):
    """KD on standardized logits: τ² · KL(softmax(Z(z_t)/τ) ‖ softmax(Z(z_s)/τ)).

    Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024,
    arXiv:2403.01427. Each sample's logits are standardized before the softmax,

        Z(z) = (z − mean(z)) / (std(z) + 1e-7)        (std unbiased, over the C classes)
        logit_std_kd = τ² · (1/B) Σ_b KL(softmax(Z(z_t,b)/τ) ‖ softmax(Z(z_s,b)/τ))

    so the student matches the teacher's *relations* between classes, not its logit range:
    the value is unchanged by z → a·z + b (a > 0) applied to either network's logits. KL
    teacher to student, 'batchmean', the final logits tapped; the cross-entropy stays on the
    raw logits.

    Note:
        Defaults follow the authors' code (built on mdistiller): base temperature 2 with KD
        weight 9 and CE weight 0.1 on CIFAR-100. torchdistill's LogitStdKDLoss computes the
        same value.

    Args:
        student_logits: (B, C) student logits, C >= 2 (a std needs two values).
        teacher_logits: (B, C) teacher logits, same shape; detached.
        temperature: τ > 0, default 2.0 (the paper's base temperature).

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError, ValueError: as `kd_loss`; fewer than 2 classes.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 2.0, 4.0]])
        >>> print(f"{abs(logit_std_kd_loss(3 * z + 7, z).item()):.4f}")  # affine map: no change
        0.0000
    """
    _check_logits(student_logits, teacher_logits, min_classes=2)
    tau = _check_temperature(temperature)
    z_s, z_t = _standardize(student_logits), _standardize(teacher_logits.detach())
    return tau**2 * _kl(
        F.log_softmax(z_s / tau, dim=1), F.log_softmax(z_t / tau, dim=1)
    )


# ---------------------------------------------------------------------------------------------


def _kl(log_q, log_p):
    # KL(p ‖ q) summed over the last dimension and averaged over the batch ('batchmean').
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def _log_binary(z, is_target):
    # log (p_y, 1 − p_y) of softmax(z), both from log-sum-exps: no log of a rounded-off 0.
    log_p = F.log_softmax(z, dim=1)
    log_p_target = log_p[is_target]  # (B,)
    log_p_rest = torch.logsumexp(log_p.masked_fill(is_target, -torch.inf), dim=1)
    return torch.stack([log_p_target, log_p_rest], dim=1)  # (B, 2)


def _standardize(z):
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + STD_EPS)


def _check_logits(student_logits, teacher_logits, targets=None, min_classes=1):
    # The rules every logit loss shares on its tensors.
    _check_student_logits(student_logits, targets, min_classes)
    check_tensor(teacher_logits, "teacher_logits", dims=2, finite=True)
    check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")


def _check_student_logits(student_logits, targets=None, min_classes=1):
    check_tensor(student_logits, "student_logits", dims=2, finite=True)
    batch, classes = student_logits.shape
    if classes < min_classes:
        raise ValueError(
            f"this loss needs logits over at least {min_classes} classes, got "
            f"student_logits of shape {tuple(student_logits.shape)}"
        )
    if targets is not None:
        check_labels(targets, "targets", batch, classes)


def _check_temperature(temperature):
    return check_real(temperature, "temperature", low=0, low_open=True)
