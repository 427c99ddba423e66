"""DIST against torchdistill, a hand-worked case and its symmetry."""

import pytest
import torch
from torch.testing import assert_close

from minicompress.distillation import dist_loss


def _logits(batch=5, classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3
    return student, teacher


def _io(tensor):
    # torchdistill's losses read module outputs from a {module path: {"output": tensor}} dict.
    return {"logits": {"output": tensor}}


@pytest.mark.parametrize(
    ("beta", "gamma", "temperature"), [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)]
)
def test_dist_matches_torchdistill(beta, gamma, temperature):
    # torchdistill's DISTLoss follows the paper's τ² form (kd_anchors §2.16); it uses
    # F.cosine_similarity's eps handling, which differs from the authors' + 1e-8 by ~1e-8.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _logits(batch=6, classes=5, seed=5)
    reference = mid_level.DISTLoss(
        "logits", "output", "logits", "output", beta=beta, gamma=gamma, tau=temperature
    )
    expected = reference(_io(student), _io(teacher))
    value = dist_loss(student, teacher, beta=beta, gamma=gamma, temperature=temperature)
    assert_close(value, expected, rtol=1e-6, atol=1e-9)


def test_dist_is_symmetric_in_student_and_teacher():
    student, teacher = _logits(batch=5, classes=6, seed=6)
    assert_close(
        dist_loss(student, teacher), dist_loss(teacher, student), rtol=1e-12, atol=0
    )


def test_dist_matches_a_hand_worked_two_by_two_case():
    # Two samples, two classes. Centred rows of a 2-vector are ±(d, -d): the inter-class
    # correlation is the sign agreement of the two rows. Student prefers class 0 for both
    # samples, teacher prefers class 0 for sample 0 and class 1 for sample 1: ρ = (1, -1),
    # inter = 1 - 0 = 1. Columns: the student's column 0 is (p, p'), the teacher's (q, 1 - q).
    student = torch.tensor([[2.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # Column 0: student (σ(2), σ(1)) decreasing, teacher (σ(1), σ(-1)) decreasing: ρ = 1.
    # Column 1: both increasing: ρ = 1. So intra = 0 and dist = 1 at τ = 1, up to the 1e-8
    # guard in ρ's denominator (the centred columns have norms near 0.1).
    assert_close(dist_loss(student, teacher).item(), 1.0, rtol=0, atol=1e-6)


def test_dist_refuses_negative_weights():
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 3), gamma=-1.0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 3), beta=-1.0)
    with pytest.raises(
        ValueError, match="student_logits and teacher_logits must have the same"
    ):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_dist_refuses_the_wrong_kinds_with_a_type_error():
    with pytest.raises(TypeError, match="beta must be a finite number >= 0, got '1'"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 3), beta="1")
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor"):
        dist_loss(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
