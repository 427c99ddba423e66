"""VID against torchdistill, a hand-worked Gaussian and its regressor's initial variance."""

import math

import pytest
import torch
from torch.testing import assert_close

from minicompress.distillation import VIDRegressor, vid_loss


def _maps(seed=0, shape=(3, 4, 2, 2)):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=generator, dtype=torch.float64)
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64)
    variance = torch.rand(shape[1], generator=generator, dtype=torch.float64) + 0.5
    return mean, variance, teacher


def test_vid_matches_torchdistill():
    # torchdistill's VIDLoss is the authors' code: the element-wise mean of the Gaussian NLL.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    mean, variance, teacher = _maps(seed=1)
    pairs = {
        "layer": {
            "student": {"io": "output", "path": "s"},
            "teacher": {"io": "output", "path": "t"},
        }
    }
    student_io = {"s": {"output": (mean, variance.view(1, -1, 1, 1))}}
    expected = mid_level.VIDLoss(pairs)(student_io, {"t": {"output": teacher}})
    assert_close(vid_loss(mean, variance, teacher), expected, rtol=1e-12, atol=0)


def test_vid_matches_a_hand_worked_gaussian():
    # One element, gap 2, σ² = 4: ½ (4 / 4 + log 4) = ½ + log 2.
    mean, teacher = (
        torch.zeros(1, 1, 1, 1, dtype=torch.float64),
        torch.full((1, 1, 1, 1), 2.0),
    )
    value = vid_loss(mean, torch.tensor([4.0], dtype=torch.float64), teacher.double())
    assert_close(value.item(), 0.5 + math.log(2.0))


def test_vid_batchmean_sums_each_samples_elements():
    mean, variance, teacher = _maps(seed=2)
    per_element = vid_loss(mean, variance, teacher)
    summed = vid_loss(mean, variance, teacher, reduction="batchmean")
    assert_close(summed, per_element * 4 * 2 * 2, rtol=1e-12, atol=0)


def test_vid_regressor_starts_at_the_initial_variance_and_learns_it():
    regressor = VIDRegressor(3, 5, init_variance=5.0)
    mean, variance = regressor(torch.rand(2, 3, 4, 4))
    assert tuple(mean.shape) == (2, 5, 4, 4) and tuple(variance.shape) == (1, 5, 1, 1)
    assert_close(variance, torch.full((1, 5, 1, 1), 5.0), rtol=1e-6, atol=0)
    teacher = torch.rand(2, 5, 4, 4, requires_grad=True)
    vid_loss(mean, variance, teacher).backward()
    assert regressor.alpha.grad.abs().sum() > 0 and teacher.grad is None


def test_vid_refuses_bad_input():
    mean, variance, teacher = _maps()
    with pytest.raises(
        ValueError, match=r"student_variance must have shape \(4,\) or \(1, 4, 1, 1\)"
    ):
        vid_loss(mean, variance[:3], teacher)
    with pytest.raises(ValueError, match="student_variance must be > 0 everywhere"):
        vid_loss(mean, -variance, teacher)
    with pytest.raises(
        ValueError, match="reduction must be one of 'mean', 'batchmean'; got 'sum'"
    ):
        vid_loss(mean, variance, teacher, reduction="sum")
    with pytest.raises(
        ValueError, match="student_mean and teacher_features must have the same shape"
    ):
        vid_loss(mean, variance, teacher[:, :, :1])
    with pytest.raises(ValueError, match="init_variance must be a finite number >"):
        VIDRegressor(3, 5, init_variance=0.0)


def test_vid_refuses_the_wrong_kinds_with_a_type_error():
    mean, variance, teacher = _maps()
    with pytest.raises(
        TypeError, match="student_variance must be a torch.Tensor, got float"
    ):
        vid_loss(mean, 5.0, teacher)
    with pytest.raises(TypeError, match="teacher_features must be a torch.Tensor"):
        vid_loss(mean, variance, teacher.numpy())
    with pytest.raises(TypeError, match="hidden_channels must be an int >= 1"):
        VIDRegressor(3, 5, hidden_channels=2.5)


def test_vid_regressor_defaults_hide_the_teacher_width():
    regressor = VIDRegressor(3, 7)
    assert regressor.mean[0].out_channels == 7 and regressor.eps == 1e-5
