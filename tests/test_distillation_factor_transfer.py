"""Factor transfer against torchdistill's paper-form FTLoss, a hand-worked case, its scale
invariance; the paraphraser's and translator's shapes."""

import pytest
import torch
from torch.testing import assert_close

from minicompress.distillation import Paraphraser, Translator, ft_loss


def _factors(seed=0, shape=(3, 4, 3, 3)):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=generator, dtype=torch.float64)
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64)
    return student, teacher


@pytest.mark.parametrize(
    ("p", "reduction", "per_batch"), [(1, "sum", True), (2, "mean", False)]
)
def test_ft_matches_torchdistill(p, reduction, per_batch):
    # torchdistill's FTLoss follows the paper. With p = 1 it calls l1_loss, whose 'sum'
    # reduction sums over the batch too (B times ours); with p = 2 'mean' is the batch mean.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    student, teacher = _factors(seed=p)
    reference = mid_level.FTLoss(p=p, reduction=reduction)
    expected = reference(
        {"translator": {"output": student}}, {"paraphraser": {"output": teacher}}
    )
    expected = expected / student.shape[0] if per_batch else expected
    assert_close(ft_loss(student, teacher, p=p), expected, rtol=1e-12, atol=0)


def test_ft_matches_a_hand_worked_case():
    # Unit factors (1, 0) and (0, 1): the L1 gap is 2, the L2 gap √2.
    student = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    assert ft_loss(student, teacher).item() == 2.0
    assert_close(ft_loss(student, teacher, p=2).item(), 2**0.5)


def test_ft_ignores_a_positive_rescaling_of_either_factor():
    student, teacher = _factors(seed=3)
    scale = torch.tensor([0.2, 4.0, 30.0], dtype=torch.float64)[:, None, None, None]
    base = ft_loss(student, teacher)
    assert_close(ft_loss(scale * student, teacher), base, rtol=1e-12, atol=0)
    assert_close(ft_loss(student, scale * teacher), base, rtol=1e-12, atol=0)


def test_paraphraser_encodes_at_the_rate_and_rebuilds_the_input_shape():
    paraphraser = Paraphraser(8, rate=0.25)
    features = torch.rand(2, 8, 5, 5)
    assert tuple(paraphraser.encode(features).shape) == (2, 2, 5, 5)
    assert tuple(paraphraser(features).shape) == (2, 8, 5, 5)
    assert tuple(Translator(3, 2)(torch.rand(2, 3, 5, 5)).shape) == (2, 2, 5, 5)


def test_ft_trains_the_translator_and_leaves_the_paraphraser_alone():
    paraphraser, translator = Paraphraser(6), Translator(4, 3)
    teacher_factor = paraphraser.encode(torch.rand(2, 6, 4, 4))
    ft_loss(translator(torch.rand(2, 4, 4, 4)), teacher_factor).backward()
    assert all(p.grad is None for p in paraphraser.parameters())
    assert translator.translate[0].weight.grad.abs().sum() > 0


def test_ft_refuses_bad_input():
    student, teacher = _factors()
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        ft_loss(student, teacher, p=0.5)
    with pytest.raises(
        ValueError, match="student_factor and teacher_factor must have the same shape"
    ):
        ft_loss(student, teacher[:, :2])
    with pytest.raises(ValueError, match=r"rate must be a finite number in \(0, 1\]"):
        Paraphraser(8, rate=0)
    with pytest.raises(ValueError, match="factor_channels must be an int >= 1"):
        Translator(4, 0)


def test_ft_refuses_the_wrong_kinds_with_a_type_error():
    with pytest.raises(TypeError, match="p must be a finite number >= 1, got '1'"):
        ft_loss(torch.ones(2, 3), torch.ones(2, 3), p="1")
    with pytest.raises(TypeError, match="teacher_factor must be a torch.Tensor"):
        ft_loss(torch.ones(2, 3), None)
    with pytest.raises(TypeError, match="channels must be an int >= 1"):
        Paraphraser(8.0)
