"""Label smoothing and the Tf-KD terms against PyTorch's own losses and the authors' form."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from minicompress.distillation import (
    kd_loss,
    label_smoothing_loss,
    tf_kd_self_loss,
    tf_kd_virtual_loss,
)


def _logits_and_labels(batch=6, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(classes, (batch,), generator=generator)
    return logits, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
def test_label_smoothing_matches_torch_cross_entropy(smoothing):
    # F.cross_entropy(label_smoothing=ε) is PyTorch's implementation of Szegedy et al.'s
    # q = (1 − ε) onehot + ε / C.
    logits, labels = _logits_and_labels()
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    assert_close(label_smoothing_loss(logits, labels, smoothing=smoothing), expected)


def test_label_smoothing_matches_a_hand_worked_case():
    # Two classes, uniform student: every log-probability is ln(1/2), so the loss is ln 2
    # whatever the smoothing (q sums to 1).
    logits, labels = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1])
    assert_close(
        label_smoothing_loss(logits, labels, smoothing=0.3).item(), math.log(2.0)
    )


def test_tf_kd_self_is_kd_at_the_authors_temperature():
    student, _ = _logits_and_labels(seed=1)
    teacher, _ = _logits_and_labels(seed=2)
    assert_close(
        tf_kd_self_loss(student, teacher), kd_loss(student, teacher, temperature=20.0)
    )
    value = tf_kd_self_loss(student, teacher, temperature=6.0)
    assert_close(value, kd_loss(student, teacher, temperature=6.0))


@pytest.mark.parametrize(
    ("correct_prob", "temperature"), [(0.99, 20.0), (0.9, 10.0), (0.5, 1.0)]
)
def test_tf_kd_virtual_matches_the_authors_form_with_batchmean(
    correct_prob, temperature
):
    # The authors' loss_kd_regularization (yuanli2333/Teacher-free-Knowledge-Distillation,
    # my_loss_function.py) written with torch ops: nn.KLDivLoss() ('mean', divides by B·C) of
    # log_softmax(z) against softmax(p^d / τ). Ours is 'batchmean', C times larger.
    logits, labels = _logits_and_labels(seed=3)
    classes = logits.shape[1]
    p_d = torch.full_like(logits, (1 - correct_prob) / (classes - 1))
    p_d[torch.arange(len(labels)), labels] = correct_prob
    with pytest.warns(UserWarning, match="reduction: 'mean'"):
        authors = nn.KLDivLoss()(
            F.log_softmax(logits, dim=1), F.softmax(p_d / temperature, dim=1)
        )
    value = tf_kd_virtual_loss(
        logits, labels, correct_prob=correct_prob, temperature=temperature
    )
    assert_close(value, classes * authors, rtol=1e-12, atol=0)


def test_tf_kd_virtual_target_is_nearly_uniform_at_high_temperature():
    # softmax(p^d / 20) with a = 0.99 over 10 classes: the label's probability exceeds the
    # others' by the factor exp((0.99 − 0.01/9) / 20) ≈ 1.0508, so a uniform student is
    # within 1e-3 of the target.
    uniform = torch.zeros(4, 10, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 9])
    assert tf_kd_virtual_loss(uniform, labels) < 1e-3
    assert tf_kd_virtual_loss(uniform, labels, temperature=1.0) > 1e-2


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda z, y: label_smoothing_loss(z, y, smoothing=1.5),
            ValueError,
            r"smoothing must be a finite number in \[0, 1\]",
        ),
        (
            lambda z, y: label_smoothing_loss(z, y, smoothing=-0.1),
            ValueError,
            "smoothing",
        ),
        (
            lambda z, y: label_smoothing_loss(z, y.float()),
            TypeError,
            "targets must hold integer",
        ),
        (
            lambda z, y: label_smoothing_loss(z, y[:2]),
            ValueError,
            "targets must hold 6 class indices",
        ),
        (
            lambda z, y: label_smoothing_loss(z[0], y),
            ValueError,
            "student_logits must have 2 dim",
        ),
        (
            lambda z, y: tf_kd_virtual_loss(z, y, correct_prob=1.2),
            ValueError,
            "correct_prob must be",
        ),
        (
            lambda z, y: tf_kd_virtual_loss(z, y, temperature=0),
            ValueError,
            "temperature must be",
        ),
        (
            lambda z, y: tf_kd_virtual_loss(z, y + 10),
            ValueError,
            r"class indices in \[0, 4\]",
        ),
        (
            lambda z, y: tf_kd_virtual_loss(z[:, :1], y * 0),
            ValueError,
            "at least 2 classes",
        ),
        (
            lambda z, y: tf_kd_self_loss(z, z[:, :3]),
            ValueError,
            "must have the same shape",
        ),
        (
            lambda z, y: tf_kd_self_loss(z, z, temperature=-1.0),
            ValueError,
            "temperature must be",
        ),
        (
            lambda z, y: label_smoothing_loss(z * math.nan, y),
            ValueError,
            "NaN or infinite",
        ),
    ],
)
def test_teacher_free_losses_refuse_bad_input(call, error, match):
    logits, labels = _logits_and_labels()
    before = logits.clone()
    with pytest.raises(error, match=match):
        call(logits, labels)
    assert torch.equal(logits, before)
