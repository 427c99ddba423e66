"""AT, FSP and NST against torchdistill, RepDistiller values, hand-worked cases and their
invariances."""

import math

import pytest
import torch
from torch.testing import assert_close

from minicompress.distillation import at_loss, fsp_loss, nst_loss


def _data(shape, k, c):
    # Deterministic, seed-free test data: sin(k·i + c) over the elements i, in float64.
    return torch.sin(
        torch.arange(math.prod(shape), dtype=torch.float64) * k + c
    ).reshape(shape)


def _maps(seed=0, student=(3, 4, 4, 4), teacher=(3, 6, 4, 4)):
    generator = torch.Generator().manual_seed(seed)
    f_s = torch.randn(student, generator=generator, dtype=torch.float64)
    f_t = torch.randn(teacher, generator=generator, dtype=torch.float64)
    return f_s, f_t


def _at_pairs():
    # torchdistill reads AT's maps from {module path: {"output": tensor}} dicts.
    return {
        "layer": {
            "student": {"io": "output", "path": "s"},
            "teacher": {"io": "output", "path": "t"},
        }
    }


# --- at_loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_at_matches_torchdistill_in_both_modes(mode):
    # torchdistill's ATLoss implements both the authors' code and the paper's eq. 2.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    f_s, f_t = _maps(seed=1)
    expected = mid_level.ATLoss(_at_pairs(), mode=mode)(
        {"s": {"output": f_s}}, {"t": {"output": f_t}}
    )
    assert_close(at_loss(f_s, f_t, mode=mode), expected, rtol=1e-12, atol=0)


def test_at_matches_a_hand_worked_case():
    # One channel, two positions. Student |F|² = (1, 0) -> Q_s = (1, 0); teacher |F|² = (1, 1)
    # -> Q_t = (1, 1)/√2. Gap (1 − 1/√2, −1/√2): squared norm 2 − √2.
    student = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    teacher = torch.tensor([[[[1.0, -1.0]]]], dtype=torch.float64)
    assert_close(at_loss(student, teacher, mode="code").item(), (2 - math.sqrt(2)) / 2)
    assert_close(
        at_loss(student, teacher, mode="paper").item(), math.sqrt(2 - math.sqrt(2))
    )


def test_at_is_invariant_to_positive_rescaling_of_either_map():
    f_s, f_t = _maps(seed=2)
    base = at_loss(f_s, f_t)
    per_sample = torch.tensor([0.1, 3.0, 50.0], dtype=torch.float64)[
        :, None, None, None
    ]
    for mode in ("code", "paper"):
        base = at_loss(f_s, f_t, mode=mode)
        assert_close(
            at_loss(per_sample * f_s, f_t, mode=mode), base, rtol=1e-12, atol=0
        )
        assert_close(at_loss(f_s, 7.0 * f_t, mode=mode), base, rtol=1e-12, atol=0)


def test_at_pools_the_larger_map_and_allows_other_channel_counts():
    f_s, f_t = _maps(seed=3, student=(2, 4, 8, 8), teacher=(2, 16, 4, 4))
    pooled = torch.nn.functional.avg_pool2d(f_s, 2)
    assert_close(at_loss(f_s, f_t), at_loss(pooled, f_t), rtol=1e-12, atol=0)


def test_at_detaches_the_teacher():
    f_s, f_t = _maps(seed=4)
    f_s.requires_grad_(True), f_t.requires_grad_(True)
    at_loss(f_s, f_t).backward()
    assert f_t.grad is None and f_s.grad.abs().sum() > 0


def test_at_refuses_bad_input():
    f_s, f_t = _maps()
    with pytest.raises(
        ValueError, match="mode must be one of 'code', 'paper'; got 'Paper'"
    ):
        at_loss(f_s, f_t, mode="Paper")
    with pytest.raises(ValueError, match="p must be a finite number > 0"):
        at_loss(f_s, f_t, p=0)
    with pytest.raises(ValueError, match="student_features must have 4 dimensions"):
        at_loss(f_s.flatten(1), f_t)
    with pytest.raises(ValueError, match="must have the same batch size"):
        at_loss(f_s, f_t[:2])
    with pytest.raises(ValueError, match="teacher_features holds 1 NaN"):
        f_t[0, 0, 0, 0] = math.nan
        at_loss(f_s, f_t)
    with pytest.raises(TypeError, match="student_features must be a torch.Tensor"):
        at_loss(f_s.numpy(), f_t)


# --- fsp_loss ---------------------------------------------------------------------------------


def test_fsp_matches_a_hand_worked_case():
    # One channel each, constant maps: G = mean(F¹ F²). Student G = 1 · 2, teacher 1 · 3.
    # Two samples, the second with G_s = G_t: the batch mean halves the first's (2 − 3)².
    ones = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    teacher_second = torch.cat([3 * ones[:1], 2 * ones[1:]])
    assert_close(fsp_loss(ones, 2 * ones, ones, teacher_second).item(), 0.5)


def test_fsp_is_repdistillers_value_times_the_matrix_size():
    # RepDistiller's FSP (distiller_zoo/FSP.py, commit b84f547) run on these tensors gave
    # 0.15937041920547626; it averages over B·C1·C2 where the paper sums over C1·C2 (= 15).
    s1, s2 = _data((2, 3, 4, 4), 0.7, 0.1), _data((2, 5, 2, 2), 1.3, 0.4)
    t1, t2 = _data((2, 3, 4, 4), 0.9, 0.2).abs(), _data((2, 5, 2, 2), 0.5, 1.0)
    assert_close(
        fsp_loss(s1, s2, t1, t2).item(), 15 * 0.15937041920547626, rtol=1e-12, atol=0
    )


def test_fsp_refuses_channel_counts_that_differ():
    s1, s2 = torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4)
    with pytest.raises(
        ValueError,
        match="student_first and teacher_first must have the same channel count",
    ):
        fsp_loss(s1, s2, torch.zeros(2, 4, 4, 4), s2)
    with pytest.raises(
        ValueError, match="student_second and teacher_second must have the same channel"
    ):
        fsp_loss(s1, s2, s1, torch.zeros(2, 6, 4, 4))
    with pytest.raises(
        ValueError, match="student_first and student_second must have the same batch"
    ):
        fsp_loss(s1, s2[:1], s1, s2[:1])


# --- nst_loss ---------------------------------------------------------------------------------


def test_nst_matches_repdistiller():
    # RepDistiller's NSTLoss (distiller_zoo/NST.py, commit b84f547) run on these tensors;
    # torchdistill has no NST. The student's 4x4 map is pooled to the teacher's 2x2.
    f_s, f_t = _data((2, 3, 4, 4), 0.7, 0.1), _data((2, 5, 2, 2), 1.1, 0.3)
    assert_close(nst_loss(f_s, f_t).item(), 0.9697891620488712, rtol=1e-12, atol=0)


def test_nst_is_zero_for_the_same_maps_and_invariant_to_channel_rescaling():
    f_s, f_t = _maps(seed=5, teacher=(3, 4, 4, 4))
    assert_close(
        nst_loss(f_s, f_s), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-12
    )
    scale = torch.tensor([0.5, 2.0, 9.0, 1.0], dtype=torch.float64)[None, :, None, None]
    assert_close(nst_loss(scale * f_s, f_t), nst_loss(f_s, f_t), rtol=1e-12, atol=1e-15)
    assert nst_loss(f_s, f_t) > 0


def test_nst_refuses_maps_of_other_batches():
    with pytest.raises(
        ValueError,
        match="student_features and teacher_features must have the same batch",
    ):
        nst_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))


def test_feature_losses_refuse_the_wrong_kinds_with_a_type_error():
    f = torch.zeros(2, 3, 4, 4)
    with pytest.raises(TypeError, match="p must be a finite number > 0, got '2'"):
        at_loss(f, f, p="2")
    with pytest.raises(
        TypeError, match="teacher_features must be a torch.Tensor, got list"
    ):
        nst_loss(f, [[0.0]])
    with pytest.raises(TypeError, match="teacher_second must be a torch.Tensor"):
        fsp_loss(f, f, f, None)
