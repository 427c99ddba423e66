"""Logit distillation losses against torchdistill, F.kl_div, hand-worked values and their
defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minicompress.distillation import kd_loss


def _logits(batch=5, classes=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 3
    return student, teacher


def _io(tensor):
    # torchdistill's losses read module outputs from a {module path: {"output": tensor}} dict.
    return {"logits": {"output": tensor}}


# --- kd_loss ----------------------------------------------------------------------------------


def test_kd_matches_a_hand_worked_two_class_case():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2) at τ = 1: KL = 3/4 ln(3/2) + 1/4 ln(1/2).
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert_close(
        kd_loss(student, teacher, temperature=1.0).item(), expected, rtol=0, atol=1e-12
    )


def test_kd_is_tau_squared_times_f_kl_div_batchmean():
    # F.kl_div(log q, p, 'batchmean') is PyTorch's own KL(p ‖ q) summed over classes / B.
    student, teacher = _logits()
    reference = F.kl_div(
        F.log_softmax(student / 3.0, dim=1),
        F.softmax(teacher / 3.0, dim=1),
        reduction="batchmean",
    )
    assert_close(
        kd_loss(student, teacher, temperature=3.0), 9.0 * reference, rtol=1e-12, atol=0
    )


def test_kd_matches_torchdistill_kdloss():
    # torchdistill's KDLoss returns the 'batchmean' KL without τ² when no targets are given.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _logits(seed=1)
    reference = mid_level.KDLoss("logits", "output", "logits", "output", 4.0, alpha=0.5)
    expected = 16.0 * reference(_io(student), _io(teacher))
    assert_close(
        kd_loss(student, teacher, temperature=4.0), expected, rtol=1e-12, atol=0
    )


def test_kd_is_zero_when_logits_differ_by_a_per_sample_constant():
    student, _ = _logits()
    shift = torch.arange(5, dtype=torch.float64)[:, None] * 10 - 20
    assert_close(
        kd_loss(student, student + shift), torch.zeros((), dtype=torch.float64)
    )
    assert kd_loss(student, student + 1e-3 * torch.randn_like(student)) > 0


def test_kd_gradient_is_tau_times_probability_gap_over_batch():
    student, teacher = _logits(batch=4, classes=6, seed=2)
    student.requires_grad_(True)
    tau = 2.5
    kd_loss(student, teacher, temperature=tau).backward()
    p_s, p_t = F.softmax(student.detach() / tau, dim=1), F.softmax(teacher / tau, dim=1)
    assert_close(student.grad, tau * (p_s - p_t) / 4, rtol=1e-10, atol=1e-14)


def test_kd_detaches_the_teacher():
    student, teacher = _logits()
    teacher.requires_grad_(True)
    loss = kd_loss(student.requires_grad_(True), teacher)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize(
    ("student", "teacher", "match"),
    [
        (
            torch.zeros(4, 10),
            torch.zeros(4, 5),
            "student_logits and teacher_logits must have the same shape",
        ),
        (torch.zeros(4, 10), torch.zeros(3, 10), "same shape"),
        (
            torch.zeros(4, 10, 1),
            torch.zeros(4, 10, 1),
            "student_logits must have 2 dimensions",
        ),
        (
            torch.zeros(4, 10),
            torch.full((4, 10), math.nan),
            "teacher_logits holds 40 NaN",
        ),
        (
            torch.full((4, 10), math.inf),
            torch.zeros(4, 10),
            "student_logits holds 40 NaN or infinite",
        ),
    ],
)
def test_kd_refuses_logits_it_cannot_compare(student, teacher, match):
    before = student.clone(), teacher.clone()
    with pytest.raises(ValueError, match=match):
        kd_loss(student, teacher)
    assert torch.equal(student, before[0]) or student.isnan().all()
    assert torch.equal(teacher, before[1]) or teacher.isnan().all()


@pytest.mark.parametrize("temperature", [0, -1.0, math.nan, math.inf])
def test_kd_refuses_a_temperature_that_is_not_positive_and_finite(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=temperature)


@pytest.mark.parametrize("temperature", ["4", None, True])
def test_kd_refuses_a_temperature_that_is_not_a_number(temperature):
    with pytest.raises(TypeError, match="temperature must be a finite number > 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=temperature)


def test_kd_refuses_logits_that_are_not_tensors():
    with pytest.raises(
        TypeError, match="student_logits must be a torch.Tensor, got list"
    ):
        kd_loss([[0.0, 1.0]], torch.zeros(1, 2))
