"""Logit distillation losses: the student's class distribution pulled towards the teacher's.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014 Deep Learning
Workshop, arXiv:1503.02531. With p^τ = softmax(z / τ) row by row and B the batch size,

    kd = τ² · (1/B) Σ_b KL(p_t,b^τ ‖ p_s,b^τ),   KL(p ‖ q) = Σ_c p_c log(p_c / q_c)

Entry points (each returns only its own term, a scalar averaged over the batch; the cross-entropy
and the weights between terms belong to the trainer):
    kd_loss(student_logits, teacher_logits, temperature=4.0)

Shapes: logits (B, C), float; the teacher's logits are detached inside every loss.

Where sources disagree: several original repositories call `nn.KLDivLoss()` with its default
reduction 'mean', which divides by B·C instead of B, a term C times smaller that they then
compensate with ad-hoc multipliers. We always sum over classes and average over the batch
('batchmean'), the reduction that makes the value a KL divergence per sample.
"""

import torch.nn.functional as F

from .._checks import check_real, check_same_shape, check_tensor

__all__ = ["kd_loss"]


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
    temperature = _check_logits(student_logits, teacher_logits, temperature)
    tau = temperature
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    return tau**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------


def _check_logits(student_logits, teacher_logits, temperature):
    # One statement of the rules every logit loss shares; returns the temperature as a float.
    check_tensor(student_logits, "student_logits", dims=2, finite=True)
    check_tensor(teacher_logits, "teacher_logits", dims=2, finite=True)
    check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    return check_real(temperature, "temperature", low=0, low_open=True)
