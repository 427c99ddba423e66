"""Teacher-free logit losses: label smoothing and the two Tf-KD terms that replace the teacher.

Yuan, Tay, Li, Wang, Feng, "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020, arXiv:1909.11723 (arXiv title "Revisit Knowledge Distillation: a
Teacher-free Framework"). KD is a learned label smoothing, and label smoothing is KD from a
"virtual teacher" that is right with a fixed confidence, so a student can be regularized
without a stronger teacher:

    label_smoothing = −(1/B) Σ_b Σ_c q_bc log p_s,bc,    q = (1 − ε) · onehot(y) + ε / C
    tf_kd_self      = kd_loss with a pretrained copy of the student as the teacher
    tf_kd_virtual   = (1/B) Σ_b KL(softmax(p^d_b / τ) ‖ p_s,b),
                      p^d = a on the label, (1 − a) / (C − 1) elsewhere

Entry points (scalars averaged over the batch; weights between terms belong to the trainer):
    label_smoothing_loss(student_logits, targets, smoothing=0.1)
    tf_kd_self_loss(student_logits, teacher_logits, temperature=20.0)
    tf_kd_virtual_loss(student_logits, targets, correct_prob=0.99, temperature=20.0)

Shapes: logits (B, C), float; targets (B,) integer class indices.

Where sources disagree: the authors' code uses `nn.KLDivLoss()`'s default 'mean' (divides by
B·C) and compensates with a per-model "multiplier" m of 1 to 100; we use 'batchmean', so their
α · m · KL_mean equals our α · (m / C) · KL_batchmean.
"""

import torch.nn.functional as F

from .._checks import check_real
from .logit import _check_student_logits, _check_temperature, _kl, kd_loss

__all__ = ["label_smoothing_loss", "tf_kd_self_loss", "tf_kd_virtual_loss"]


def label_smoothing_loss(student_logits, targets, smoothing=0.1):
    """Cross-entropy against smoothed labels: −(1/B) Σ_b Σ_c q_bc log p_s,bc.

    Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception Architecture for
    Computer Vision", CVPR 2016, arXiv:1512.00567; read as a virtual teacher by Yuan et al.,
    CVPR 2020, arXiv:1909.11723. With ε the smoothing and C the classes,

        q = (1 − ε) · onehot(y) + ε / C        (uniform mass ε spread over all C classes)
        label_smoothing = (1/B) Σ_b H(q_b, p_s,b) = (1 − ε) · CE + ε · H(u, p_s)

    It *replaces* the cross-entropy, so the trainer uses it with w_ce = 0. Equal to
    `F.cross_entropy(z, y, label_smoothing=ε)`; the final logits are the only tap.

    Note:
        Tf-KD's code puts 1 − ε on the label and ε / (C − 1) on each other class (no uniform
        mass on the label); we use the paper's uniform u, which is PyTorch's, so the two
        agree up to ε / C on the label.

    Args:
        student_logits: (B, C) student logits.
        targets: (B,) integer labels in [0, C).
        smoothing: ε in [0, 1], default 0.1 (Szegedy et al.; Tf-KD).

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError: non-tensor logits or targets, float targets, non-numeric smoothing.
        ValueError: logits not 2-D or not finite; targets of the wrong length or out of
            range; smoothing outside [0, 1].

    Example:
        >>> import torch
        >>> z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
        >>> reference = torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1)
        >>> print(f"{label_smoothing_loss(z, y) - reference:.4f}")
        0.0000
    """
    _check_student_logits(student_logits, targets)
    smoothing = check_real(smoothing, "smoothing", low=0, high=1)
    log_p_s = F.log_softmax(student_logits, dim=1)
    onehot = F.one_hot(targets, log_p_s.shape[1]).to(log_p_s.dtype)
    q = (1 - smoothing) * onehot + smoothing / log_p_s.shape[1]
    return -(q * log_p_s).sum(dim=1).mean()


def tf_kd_self_loss(student_logits, teacher_logits, temperature=20.0):
    """Tf-KD self-training: the KD term with the student's own pretrained copy as teacher.

    Yuan, Tay, Li, Wang, Feng, "Revisiting Knowledge Distillation via Label Smoothing
    Regularization", CVPR 2020, arXiv:1909.11723. First train a copy of the student
    architecture normally; then train a fresh student with

        total = w_ce · CE + w_kd · τ² · (1/B) Σ_b KL(p_t,b^τ ‖ p_s,b^τ)

    where the "teacher" logits come from that copy. The term is exactly `kd_loss` (same KL
    direction, 'batchmean', teacher detached); only the teacher and the default τ differ.
    The two training runs are the trainer's job.

    Note:
        The authors' runs use τ = 20 for most CIFAR-100 students (6 for ResNet-18/50) with
        α = w_kd between 0.1 and 0.95 and KL 'mean' times a multiplier (see the module note).

    Args:
        student_logits: (B, C) student logits.
        teacher_logits: (B, C) logits of the pretrained copy of the student; detached.
        temperature: τ > 0, default 20.0.

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError, ValueError: as `kd_loss`.

    Example:
        >>> import torch
        >>> z_s, z_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]])
        >>> print(bool(tf_kd_self_loss(z_s, z_t) == kd_loss(z_s, z_t, temperature=20.0)))
        True
    """
    return kd_loss(student_logits, teacher_logits, temperature=temperature)


def tf_kd_virtual_loss(student_logits, targets, correct_prob=0.99, temperature=20.0):
    """Tf-KD regularization: KL from a softened "virtual teacher" that is always right.

    Yuan, Tay, Li, Wang, Feng, "Revisiting Knowledge Distillation via Label Smoothing
    Regularization", CVPR 2020, arXiv:1909.11723. The virtual teacher puts probability a on
    the label and spreads the rest evenly; it is softened by a temperature and the student is
    pulled towards it:

        p^d = a · onehot(y) + (1 − a) / (C − 1) · (1 − onehot(y))
        tf_kd_virtual = (1/B) Σ_b KL(softmax(p^d_b / τ) ‖ softmax(z_s,b))

    with the trainer's total w_ce · CE + w_reg · tf_kd_virtual. KL runs virtual teacher to
    student, 'batchmean'; the final logits are the only tap.

    Note:
        We follow the authors' code, which produced the paper's numbers: the softmax is
        applied to the probability *vector* p^d divided by τ (so at τ = 20 the target is
        nearly uniform with a small bump on the label), the student enters at temperature 1,
        and there is no τ² factor. Their 'mean' reduction and multiplier are replaced by
        'batchmean' (module note). KD-Lib's VirtualTeacher copies this form with a = 0.9.

    Args:
        student_logits: (B, C) student logits, C >= 2.
        targets: (B,) integer labels in [0, C).
        correct_prob: a in [0, 1], the virtual teacher's probability of the label,
            default 0.99 (the authors' code).
        temperature: τ > 0, default 20.0 (ResNet-18 on CIFAR-100; 10 to 40 in their runs).

    Returns:
        A scalar tensor, differentiable with respect to `student_logits`.

    Raises:
        TypeError, ValueError: as `label_smoothing_loss`; fewer than 2 classes;
            correct_prob outside [0, 1]; temperature <= 0.

    Example:
        >>> import torch
        >>> y, p_d = torch.tensor([1]), torch.tensor([[0.01, 0.99]])  # a = 0.99, C = 2
        >>> print(f"{tf_kd_virtual_loss(p_d / 20, y):.4f}")  # logits p^d / τ match the target
        0.0000
    """
    _check_student_logits(student_logits, targets, min_classes=2)
    tau = _check_temperature(temperature)
    a = check_real(correct_prob, "correct_prob", low=0, high=1)
    classes = student_logits.shape[1]
    onehot = F.one_hot(targets, classes).to(student_logits.dtype)
    p_d = a * onehot + (1 - a) / (classes - 1) * (1 - onehot)
    log_p_teacher = F.log_softmax(p_d / tau, dim=1)
    return _kl(F.log_softmax(student_logits, dim=1), log_p_teacher)
