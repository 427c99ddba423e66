"""Tests of minicompress.quantization.folding: BatchNorm folded into the convolution before it."""

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize

from minicompress.pruning import apply_mask
from minicompress.quantization import FakeQuantWeight, fold_batchnorm, fold_bn_weights


def with_statistics(model, seed=0):
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fold_formula_worked_by_hand():
    # σ = √(3 + 1) = 2, γ/σ = 1: W stays 2, b = 0.5 + (1 - 3)·1 = -1.5
    weight, bias = fold_bn_weights(
        torch.tensor([[[[2.0]]]]),
        torch.tensor([1.0]),
        torch.tensor([3.0]),
        torch.tensor([3.0]),
        1.0,
        torch.tensor([2.0]),
        torch.tensor([0.5]),
    )
    assert weight.flatten().tolist() == [2.0] and bias.tolist() == [-1.5]


@pytest.mark.parametrize(
    "conv,bn,shape",
    [
        (nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), (2, 2, 7)),
        (nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), (2, 2, 6, 6)),
        (nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4, affine=False), (2, 4, 6, 6)),
        (nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3), (2, 2, 4, 4, 4)),
    ],
)
def test_folded_model_equals_the_model_in_eval_mode(conv, bn, shape):
    model = with_statistics(nn.Sequential(conv, bn, nn.ReLU()).double())
    before = state(model)
    folded = fold_batchnorm(model)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()
    )
    assert all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )  # untouched


def test_folded_resnet18_equals_resnet18():
    model = with_statistics(torchvision.models.resnet18(num_classes=10))
    folded = fold_batchnorm(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_a_batchnorm_whose_input_is_read_twice_is_left_alone():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second term

    model = with_statistics(TwoReaders())
    folded = fold_batchnorm(model)
    x = torch.randn(1, 1, 5, 5)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    torch.testing.assert_close(folded(x), model(x))


def test_a_pruned_conv_folds_and_keeps_its_zeros():
    model = with_statistics(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)))
    mask = torch.rand(3, 2, 3, 3, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_mask(model[0], mask)
    folded = fold_batchnorm(model)
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert bool((folded.get_submodule("0").weight[~mask] == 0).all())


def test_a_quantized_conv_does_not_fold_and_nothing_changes():
    model = with_statistics(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)))
    parametrize.register_parametrization(model[0], "weight", FakeQuantWeight())
    before = state(model)
    with pytest.raises(
        ValueError,
        match="0.weight carries FakeQuantWeight: fold BatchNorm before quantizing",
    ):
        fold_batchnorm(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fold_batchnorm("resnet18")
