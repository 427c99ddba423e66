"""RKD, SP, PKT and CC against torchdistill (where it follows the paper), RepDistiller values,
hand-worked batches and their invariances."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minicompress.distillation import (
    cc_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    sp_loss,
)


def _data(shape, k, c):
    # Deterministic, seed-free test data: sin(k·i + c) over the elements i, in float64.
    return torch.sin(
        torch.arange(math.prod(shape), dtype=torch.float64) * k + c
    ).reshape(shape)


def _embeddings(seed=0, batch=6, student_dim=5, teacher_dim=8):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, student_dim, generator=generator, dtype=torch.float64)
    teacher = torch.randn(batch, teacher_dim, generator=generator, dtype=torch.float64)
    return student, teacher


def _io(tensor, path):
    return {path: {"output": tensor}}


# --- RKD --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "factors"), [(rkd_distance_loss, (1.0, 0.0)), (rkd_angle_loss, (0.0, 1.0))]
)
def test_rkd_matches_torchdistill(ours, factors):
    # torchdistill's RKDLoss follows the authors' code (Huber, mean over the entries).
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _embeddings(seed=1)
    reference = mid_level.RKDLoss("s", "t", *factors, reduction="mean")
    expected = reference(_io(student, "s"), _io(teacher, "t"))
    assert_close(ours(student, teacher), expected, rtol=1e-10, atol=1e-14)


def test_rkd_distance_matches_a_hand_worked_line():
    # Points 0, 1, 3 (student) and 0, 2, 3 (teacher) on a line: mean distance 2 on both sides,
    # ψ_s = (1/2, 3/2, 1), ψ_t = (1, 3/2, 1/2) for the pairs (01, 02, 12). Huber(±1/2) = 1/8,
    # each pair counted twice among the 9 entries: (4 · 1/8) / 9 = 1/18.
    student = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0], [2.0], [3.0]], dtype=torch.float64)
    assert_close(rkd_distance_loss(student, teacher).item(), 1 / 18)


def test_rkd_angle_matches_a_hand_worked_right_triangle():
    # Student: a right angle at x_0 (cos 0) and 45° at x_1 and x_2 (cos √½). Teacher: the
    # points 1, 0, 2 on a line, so at x_0 the others lie opposite (cos −1) and at x_1, x_2 on
    # one side (cos 1). Each vertex j has two ordered pairs (i, k) with i ≠ k, both ≠ j; the
    # entries with i = k have cos 1 on both sides and the degenerate ones (i or k = j) 0, so
    # only 6 of the 27 entries differ.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    gaps = [0.0 - -1.0, math.sqrt(0.5) - 1.0, math.sqrt(0.5) - 1.0]
    huber = [abs(g) - 0.5 if abs(g) >= 1 else 0.5 * g * g for g in gaps]
    assert_close(rkd_angle_loss(student, teacher).item(), 2 * sum(huber) / 27)


@pytest.mark.parametrize("loss", [rkd_distance_loss, rkd_angle_loss])
def test_rkd_is_invariant_to_scaling_and_translating_either_embedding(loss):
    student, teacher = _embeddings(seed=2)
    base = loss(student, teacher)
    assert base > 0
    assert_close(loss(3.5 * student - 2.0, teacher), base, rtol=1e-10, atol=1e-14)
    assert_close(loss(student, 0.25 * teacher + 7.0), base, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", [rkd_distance_loss, rkd_angle_loss])
def test_rkd_gradients_are_finite_at_the_zero_diagonal(loss):
    student, teacher = _embeddings(seed=3)
    student.requires_grad_(True)
    loss(student, teacher).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


# --- SP ---------------------------------------------------------------------------------------


def test_sp_matches_repdistiller():
    # RepDistiller's Similarity (distiller_zoo/SP.py, commit b84f547, "verified by original
    # author") run on these tensors; torchdistill's SPKDLoss cannot serve (L1 rows).
    student, teacher = _data((4, 3, 2, 2), 0.7, 0.1), _data((4, 6), 1.1, 0.3)
    assert_close(
        sp_loss(student, teacher).item(), 0.4700384603247273, rtol=1e-12, atol=0
    )


def test_sp_matches_a_hand_worked_pair():
    # Q_s = [[1, 0], [1, 1]] -> G_s rows (1, 1)/√2 and (1, 2)/√5; Q_t = I -> G_t = I.
    # ‖G_s − G_t‖² = (2 − √2) + (2 − 4/√5), divided by B² = 4.
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    teacher = torch.eye(2, dtype=torch.float64)
    expected = (4 - math.sqrt(2) - 4 / math.sqrt(5)) / 4
    assert_close(sp_loss(student, teacher).item(), expected)


def test_torchdistill_sp_normalizes_rows_by_their_l1_norm_instead():
    # The discrepancy our docstring states: torchdistill's value is the same formula with each
    # Gram row divided by its L1 norm, and differs from ours.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _embeddings(seed=4)
    theirs = mid_level.SPKDLoss("s", "t", reduction="batchmean")(
        _io(student, "s"), _io(teacher, "t")
    )
    g_s, g_t = student @ student.T, teacher @ teacher.T
    l1_rows = (F.normalize(g_s, p=1, dim=1) - F.normalize(g_t, p=1, dim=1)).pow(
        2
    ).sum() / 36
    assert_close(theirs, l1_rows, rtol=1e-12, atol=0)
    assert not torch.isclose(sp_loss(student, teacher), theirs)


# --- PKT --------------------------------------------------------------------------------------


def test_pkt_matches_torchdistill():
    # torchdistill's PKTLoss is the authors' cosine_similarity_loss.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _embeddings(seed=5)
    reference = mid_level.PKTLoss("s", "output", "t", "output")
    expected = reference(_io(student, "s"), _io(teacher, "t"))
    assert_close(pkt_loss(student, teacher), expected, rtol=1e-12, atol=0)


def test_pkt_is_zero_for_proportional_embeddings_and_positive_otherwise():
    student, teacher = _embeddings(seed=6, teacher_dim=5)
    assert abs(pkt_loss(4.0 * teacher, teacher).item()) < 1e-12
    assert pkt_loss(student, teacher) > 0


# --- CC ---------------------------------------------------------------------------------------


def test_cc_squares_torchdistills_norm_on_normalized_embeddings():
    # torchdistill's CCKDLoss has the paper's kernel but returns the unsquared norm / B² and
    # does not normalize: on unit embeddings ours is (its value · B²)² / B².
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _embeddings(seed=7)
    unit_s, unit_t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    kernel = {"type": "gaussian", "gamma": 0.4, "max_p": 2}
    reference = mid_level.CCKDLoss("s", "t", kernel, reduction="batchmean")
    theirs = reference(_io(unit_s, "s"), _io(unit_t, "t"))
    assert_close(cc_loss(student, teacher), theirs**2 * 36, rtol=1e-10, atol=0)


def test_cc_matches_an_implementation_of_the_paper_form():
    # JDAI-CV/FaceX-Zoo's CC loss (addition_module/face_lightning/KDF/loss/cc.py, commit
    # 0fea63c: L2-normalized features, the order-P expansion, F.mse_loss over the B² entries)
    # run on these tensors.
    student, teacher = _data((5, 4), 0.7, 0.1), _data((5, 6), 1.1, 0.3)
    assert_close(cc_loss(student, teacher).item(), 0.172452326190039, rtol=1e-12, atol=0)


def test_cc_matches_a_hand_worked_first_order_kernel():
    # Order 1: ψ_ij = e^(−2γ) (1 + 2γ cos_ij). Student: two parallel vectors (cos 1), teacher:
    # orthogonal (cos 0). Only the two off-diagonal entries differ, by 2γ e^(−2γ).
    student = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    teacher = torch.eye(2, dtype=torch.float64)
    gap = 2 * 0.4 * math.exp(-0.8)
    assert_close(cc_loss(student, teacher, order=1).item(), 2 * gap**2 / 4)
    assert cc_loss(student, teacher, order=0).item() == 0.0  # a constant kernel


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss", [rkd_distance_loss, rkd_angle_loss, sp_loss, pkt_loss, cc_loss]
)
def test_relational_losses_refuse_batches_they_cannot_relate(loss):
    student, teacher = _embeddings()
    with pytest.raises(
        ValueError, match="give at least 2, got student_embeddings of shape"
    ):
        loss(student[:1], teacher[:1])
    with pytest.raises(ValueError, match="must have the same batch size"):
        loss(student, teacher[:4])
    with pytest.raises(
        ValueError, match="student_embeddings must have 2 or 3 or 4 dimensions"
    ):
        loss(student[0], teacher)
    with pytest.raises(ValueError, match="teacher_embeddings holds 48 NaN"):
        loss(student, teacher * math.nan)


def test_relational_hyperparameters_are_checked():
    student, teacher = _embeddings()
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        cc_loss(student, teacher, gamma=0.0)
    with pytest.raises(ValueError, match="order must be an int >= 0"):
        cc_loss(student, teacher, order=-1)
    with pytest.raises(TypeError, match="order must be an int"):
        cc_loss(student, teacher, order=2.0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        pkt_loss(student, teacher, eps=0.0)


@pytest.mark.parametrize(
    "loss", [rkd_distance_loss, rkd_angle_loss, sp_loss, pkt_loss, cc_loss]
)
def test_relational_losses_refuse_the_wrong_kinds_with_a_type_error(loss):
    student, teacher = _embeddings()
    with pytest.raises(
        TypeError, match="student_embeddings must be a torch.Tensor, got list"
    ):
        loss(student.tolist(), teacher)
    with pytest.raises(TypeError, match="teacher_embeddings must be a torch.Tensor"):
        loss(student, None)


@pytest.mark.parametrize(
    "loss", [rkd_distance_loss, rkd_angle_loss, sp_loss, pkt_loss, cc_loss]
)
def test_relational_losses_train_the_student_and_detach_the_teacher(loss):
    student, teacher = _embeddings(seed=8)
    student.requires_grad_(True), teacher.requires_grad_(True)
    loss(student, teacher).backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
