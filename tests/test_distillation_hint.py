"""FitNets and activation-boundary losses against PyTorch's MSE, torchdistill and hand-worked
cases; their adapters' shapes."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minicompress.distillation import Connector, HintRegressor, ab_loss, fitnet_loss


def _pair(shape=(3, 4, 5, 5), seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=generator, dtype=torch.float64)
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64)
    return student, teacher


# --- fitnet_loss ------------------------------------------------------------------------------


def test_fitnet_is_half_the_summed_squared_error_per_sample():
    # F.mse_loss(reduction="sum") is the squared Frobenius norm over the whole batch.
    student, teacher = _pair()
    expected = F.mse_loss(student, teacher, reduction="sum") / (2 * student.shape[0])
    assert_close(fitnet_loss(student, teacher), expected, rtol=1e-12, atol=0)


def test_fitnet_matches_a_hand_worked_case():
    # One sample, gaps (1, -2): ½ (1 + 4) = 2.5.
    student = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    assert fitnet_loss(student, teacher).item() == 2.5


def test_fitnet_detaches_the_teacher_and_trains_the_regressor():
    regressor = HintRegressor(4, 6, student_size=5, teacher_size=3)
    student = torch.rand(2, 4, 5, 5)
    teacher = torch.rand(2, 6, 3, 3, requires_grad=True)
    fitnet_loss(regressor(student), teacher).backward()
    assert teacher.grad is None
    assert regressor.regress[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("student_size", "teacher_size", "kind", "kernel"),
    [
        (8, 6, torch.nn.Conv2d, (3, 3)),
        (4, 7, torch.nn.ConvTranspose2d, (4, 4)),
        ((6, 5), (4, 5), torch.nn.Conv2d, (3, 1)),
    ],
)
def test_hint_regressor_maps_the_student_size_to_the_teachers(
    student_size, teacher_size, kind, kernel
):
    # The paper's rule: kernel = size difference + 1, no padding.
    regressor = HintRegressor(3, 5, student_size, teacher_size)
    h, w = torch.nn.modules.utils._pair(student_size)
    out = regressor(torch.rand(2, 3, h, w))
    assert tuple(out.shape) == (2, 5, *torch.nn.modules.utils._pair(teacher_size))
    assert (
        isinstance(regressor.regress[0], kind)
        and regressor.regress[0].kernel_size == kernel
    )
    assert out.min() >= 0  # ends in a ReLU by default
    assert isinstance(
        HintRegressor(3, 5, 4, 4, relu=False).regress[1], torch.nn.Identity
    )


def test_hint_regressor_refuses_sizes_it_cannot_map():
    with pytest.raises(
        ValueError,
        match=r"student_size \(6, 3\) must be at least teacher_size \(4, 4\)",
    ):
        HintRegressor(3, 5, (6, 3), 4)
    with pytest.raises(ValueError, match="student_channels must be an int >= 1, got 0"):
        HintRegressor(0, 5, 4, 4)
    with pytest.raises(TypeError, match="relu must be True or False"):
        HintRegressor(3, 5, 4, 4, relu=1)


def test_fitnet_refuses_shapes_that_differ():
    with pytest.raises(
        ValueError, match="student_hint and teacher_hint must have the same shape"
    ):
        fitnet_loss(torch.zeros(2, 4, 3, 3), torch.zeros(2, 6, 3, 3))
    with pytest.raises(ValueError, match="teacher_hint holds 1 NaN"):
        fitnet_loss(torch.zeros(1, 2), torch.tensor([[0.0, float("nan")]]))


# --- ab_loss ----------------------------------------------------------------------------------


def test_ab_matches_torchdistill():
    # torchdistill's AltActTransferLoss is the paper's (and authors' code's) squared hinge,
    # summed and divided by the batch size with reduction "mean".
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _pair(seed=1)
    pairs = {
        "layer": {
            "student": {"io": "output", "path": "s"},
            "teacher": {"io": "output", "path": "t"},
        }
    }
    reference = mid_level.AltActTransferLoss(pairs, margin=0.5, reduction="mean")
    expected = reference({"s": {"output": student}}, {"t": {"output": teacher}})
    assert_close(ab_loss(student, teacher, margin=0.5), expected, rtol=1e-12, atol=0)


def test_ab_matches_hand_worked_neurons():
    # Margin 1. Teacher on (t > 0): student 0.5 costs (1 − 0.5)², student 2 costs nothing.
    # Teacher off: student 0 costs (1 + 0)², student −2 costs nothing.
    student = torch.tensor([[0.5, 2.0, 0.0, -2.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
    assert ab_loss(student, teacher).item() == 0.25 + 1.0


def test_connector_maps_channels_without_a_relu():
    connector = Connector(4, 8).eval()
    out = connector(torch.randn(2, 4, 3, 3))
    assert tuple(out.shape) == (2, 8, 3, 3) and out.min() < 0


def test_ab_refuses_bad_input():
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        ab_loss(torch.zeros(2, 3), torch.zeros(2, 3), margin=-1.0)
    with pytest.raises(
        ValueError,
        match="student_features and teacher_features must have the same shape",
    ):
        ab_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="teacher_channels must be an int >= 1"):
        Connector(4, 0)


def test_hint_losses_refuse_the_wrong_kinds_with_a_type_error():
    with pytest.raises(TypeError, match="margin must be a finite number >= 0, got '1'"):
        ab_loss(torch.zeros(2, 3), torch.zeros(2, 3), margin="1")
    with pytest.raises(TypeError, match="student_hint must be a torch.Tensor"):
        fitnet_loss(1.0, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="teacher_channels must be an int >= 1"):
        HintRegressor(3, 5.0, 4, 4)
