"""Logit distillation losses against torchdistill, F.kl_div, hand-worked values and their
defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minicompress.distillation import dkd_loss, kd_loss, logit_std_kd_loss


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


# --- dkd_loss ---------------------------------------------------------------------------------

_DKD_STUDENT = [[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 3.0], [-2.0, 1.5, 0.5, 0.0]]
_DKD_TEACHER = [[2.5, 0.0, 1.0, -1.0], [0.0, 0.5, -0.5, 4.0], [1.0, 2.0, -1.0, 0.5]]


@pytest.mark.parametrize(
    ("alpha", "beta", "temperature", "expected"),
    [
        # Computed with the authors' dkd_loss (megvii-research/mdistiller, commit a08d46f,
        # mdistiller/distillers/DKD.py) on these float64 tensors; mdistiller is the official
        # DKD code and is not on PyPI, so its values are kept as literals.
        (1.0, 8.0, 4.0, 2.9002443309758674),
        (1.0, 0.0, 4.0, 0.37817901125396175),
        (0.0, 1.0, 4.0, 0.31525816496523823),
        (0.5, 2.0, 1.0, 0.5009661920039745),
    ],
)
def test_dkd_matches_the_authors_code(alpha, beta, temperature, expected):
    student = torch.tensor(_DKD_STUDENT, dtype=torch.float64)
    teacher = torch.tensor(_DKD_TEACHER, dtype=torch.float64)
    targets = torch.tensor([0, 3, 2])
    value = dkd_loss(
        student, teacher, targets, alpha=alpha, beta=beta, temperature=temperature
    )
    assert_close(value.item(), expected, rtol=1e-12, atol=0)


def test_dkd_tckd_matches_a_hand_worked_case():
    # Student uniform over 3 classes: b_s = (1/3, 2/3). Teacher logits (2, 0, 0) at τ = 4:
    # p_y = e^0.5 / (e^0.5 + 2), b_t = (p_y, 1 - p_y); TCKD = KL(b_t ‖ b_s).
    p_y = math.exp(0.5) / (math.exp(0.5) + 2)
    tckd = p_y * math.log(p_y * 3) + (1 - p_y) * math.log((1 - p_y) * 1.5)
    student, teacher = (
        torch.zeros(1, 3, dtype=torch.float64),
        torch.tensor([[2.0, 0.0, 0.0]]),
    )
    value = dkd_loss(student, teacher.double(), torch.tensor([0]), alpha=1.0, beta=0.0)
    assert_close(value.item(), 16 * tckd, rtol=1e-12, atol=0)
    # The teacher's other classes are equal, as are the student's: NCKD is zero.
    assert (
        dkd_loss(student, teacher.double(), torch.tensor([0]), alpha=0.0, beta=1.0) == 0
    )


def test_kd_is_tckd_plus_teacher_doubt_times_nckd_for_every_sample():
    # DKD paper, eq. 7: KL(p_t ‖ p_s) = TCKD + (1 − p_t,y) · NCKD, sample by sample.
    student, teacher = _logits(batch=6, classes=5, seed=3)
    targets = torch.tensor([0, 4, 2, 2, 1, 3])
    tau = 2.0
    for b in range(6):
        s, t, y = student[b : b + 1], teacher[b : b + 1], targets[b : b + 1]
        kl = kd_loss(s, t, temperature=tau) / tau**2
        tckd = dkd_loss(s, t, y, alpha=1.0, beta=0.0, temperature=tau) / tau**2
        nckd = dkd_loss(s, t, y, alpha=0.0, beta=1.0, temperature=tau) / tau**2
        p_t_y = F.softmax(t / tau, dim=1)[0, y]
        assert_close(kl, tckd + (1 - p_t_y[0]) * nckd, rtol=1e-12, atol=1e-15)


def test_dkd_with_alpha_one_and_beta_equal_to_doubt_is_kd_for_one_sample():
    student, teacher = _logits(batch=1, classes=4, seed=4)
    target = torch.tensor([2])
    doubt = 1 - F.softmax(teacher / 4.0, dim=1)[0, 2].item()
    assert_close(
        dkd_loss(student, teacher, target, beta=doubt), kd_loss(student, teacher)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"targets": torch.tensor([0, 1, 5])},
            ValueError,
            r"targets must be class indices in \[0, 3\]",
        ),
        (
            {"targets": torch.tensor([0, 1])},
            ValueError,
            "targets must hold 3 class indices",
        ),
        (
            {"targets": torch.tensor([0.0, 1.0, 2.0])},
            TypeError,
            "integer class indices",
        ),
        ({"alpha": -1.0}, ValueError, "alpha must be a finite number >= 0"),
        ({"beta": -0.5}, ValueError, "beta must be a finite number >= 0"),
        ({"beta": "8"}, TypeError, "beta must be a finite number"),
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
    ],
)
def test_dkd_refuses_bad_labels_and_weights(kwargs, error, match):
    arguments = {"targets": torch.tensor([0, 1, 2]), **kwargs}
    targets = arguments.pop("targets")
    with pytest.raises(error, match=match):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 4), targets, **arguments)


def test_dkd_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))


# --- logit_std_kd_loss ------------------------------------------------------------------------


def test_logit_std_kd_matches_torchdistill():
    # torchdistill's LogitStdKDLoss returns the 'batchmean' KL without τ² when no targets
    # are given (the same eps and unbiased std as the authors' code).
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _logits(batch=5, classes=7, seed=7)
    reference = mid_level.LogitStdKDLoss(
        "logits", "output", "logits", "output", 2.0, alpha=0.5
    )
    expected = 4.0 * reference(_io(student), _io(teacher))
    assert_close(logit_std_kd_loss(student, teacher), expected, rtol=1e-12, atol=0)


def test_logit_std_kd_is_invariant_to_affine_maps_of_either_logit_vector():
    student, teacher = _logits(batch=4, classes=6, seed=8)
    scale = torch.tensor([[0.5], [2.0], [10.0], [1.0]], dtype=torch.float64)
    shift = torch.tensor([[3.0], [-7.0], [0.0], [100.0]], dtype=torch.float64)
    base = logit_std_kd_loss(student, teacher)
    assert base > 0
    # The 1e-7 added to the std makes the invariance exact only up to ~1e-7 relative.
    assert_close(
        logit_std_kd_loss(scale * student + shift, teacher), base, rtol=1e-6, atol=0
    )
    assert_close(
        logit_std_kd_loss(student, scale * teacher + shift), base, rtol=1e-6, atol=0
    )


def test_logit_std_kd_is_kd_of_standardized_logits():
    student, teacher = _logits(seed=9)

    def standardize(z):  # the paper's Z(z), written out with torch.std_mean
        std, mean = torch.std_mean(z, dim=1, keepdim=True)
        return (z - mean) / (std + 1e-7)

    expected = kd_loss(standardize(student), standardize(teacher), temperature=2.0)
    assert_close(logit_std_kd_loss(student, teacher), expected, rtol=1e-12, atol=0)


def test_logit_std_kd_needs_two_classes_and_a_positive_temperature():
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_std_kd_loss(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        logit_std_kd_loss(torch.zeros(3, 2), torch.zeros(3, 2), temperature=-2.0)


@pytest.mark.parametrize("loss", [kd_loss, logit_std_kd_loss])
def test_logit_losses_refuse_a_missing_teacher(loss):
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor, got NoneType"):
        loss(torch.zeros(2, 3), None)
