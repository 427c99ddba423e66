"""Tests of minicompress.quantization.equalization: cross-layer equalization (Nagel et al. 2019)."""

import pytest
import torch
import torchvision
from torch import nn

from minicompress.pruning import apply_mask
from minicompress.quantization import (
    equalization_pairs,
    equalization_scales,
    equalize,
    equalize_pair,
    fold_batchnorm,
    input_ranges,
    quantize_weights,
)

from model_state import snapshot, unchanged


def with_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so folding spreads the ranges."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.1 + 2 * torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.05 + 2 * torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def separable(act=nn.ReLU):
    """pointwise -> depthwise -> pointwise with BatchNorm: two pairs sharing the depthwise conv."""
    return with_statistics(
        nn.Sequential(
            nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), act(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), act(),
            nn.Conv2d(8, 4, 1),
        )  # fmt: skip
    ).double()


def ranges_of_pairs(model):
    """[(r1, r2)] per pair: output-channel ranges of the first layer, input-channel ranges of
    the second."""
    out = []
    for first, second in equalization_pairs(model):
        w1, w2 = model.get_submodule(first).weight, model.get_submodule(second).weight
        r1 = w1.detach().abs().reshape(w1.shape[0], -1).amax(1)
        out.append((r1, input_ranges(w2.detach(), getattr(model.get_submodule(second), "groups", 1))))
    return out


def test_pair_equalized_by_hand():
    # r1 = (4, 0.5), r2 = (1, 2): s = (√4, √0.25) = (2, 0.5); both ranges become (2, 1)
    w1 = torch.tensor([[4.0, -1.0], [0.5, 0.25]])
    w2 = torch.tensor([[1.0, -2.0], [0.5, 1.0]])
    new1, b1, new2, s = equalize_pair(w1, torch.tensor([2.0, 1.0]), w2)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(new1, torch.tensor([[2.0, -0.5], [1.0, 0.5]]))
    torch.testing.assert_close(b1, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(new2, torch.tensor([[2.0, -1.0], [1.0, 0.5]]))


def test_a_dead_channel_keeps_scale_one():
    s = equalization_scales(torch.tensor([4.0, 0.0, 1.0]), torch.tensor([1.0, 3.0, 0.0]))
    assert s.tolist() == [2.0, 1.0, 1.0]


def test_input_ranges_of_a_depthwise_conv_are_its_channel_ranges():
    w = torch.tensor([[[[1.0, -3.0]]], [[[0.5, 0.2]]]])  # (2, 1, 1, 2), groups = 2
    assert input_ranges(w, groups=2).tolist() == [3.0, 0.5]
    assert input_ranges(w.reshape(1, 2, 1, 2)).tolist() == [3.0, 0.5]  # ordinary conv


@pytest.mark.parametrize(
    "model,shape",
    [
        (nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Dropout(), nn.Linear(7, 3), nn.LeakyReLU(0.1), nn.Linear(3, 2)), (4, 5)),
        (nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 3, groups=2), nn.AvgPool2d(2), nn.Conv2d(4, 3, 1)), (2, 2, 12, 12)),
        (nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3, groups=4), nn.Conv1d(4, 2, 1)), (2, 2, 9)),
    ],
)  # fmt: skip
def test_equalized_model_computes_the_same_function(model, shape):
    model = model.double().eval()
    before = snapshot(model)
    equalized = equalize(model)
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(equalized(x), model(x), rtol=1e-5, atol=1e-5)
    assert equalization_pairs(equalized) and unchanged(model, before)


def test_each_pair_ends_with_equal_per_channel_ranges():
    # The defining property (§4.1): r̂1_i = r̂2_i, here through a chain whose middle
    # (depthwise) layer belongs to two pairs, so the pairs are iterated to convergence.
    model = separable()
    equalized = equalize(model, tol=1e-9)
    pairs = ranges_of_pairs(equalized)
    assert len(pairs) == 2
    for r1, r2 in pairs:
        torch.testing.assert_close(r1, r2, rtol=1e-6, atol=0)
    before = ranges_of_pairs(fold_batchnorm(model))
    assert max(float((r1 / r2).max()) for r1, r2 in before) > 2  # they were not equal


def test_equalization_narrows_the_spread_of_ranges_in_a_layer():
    folded, equalized = fold_batchnorm(separable()), equalize(separable())
    spread = lambda m: (lambda r: float(r.max() / r.min()))(
        m.get_submodule("3").weight.detach().abs().flatten(1).amax(1)
    )
    assert spread(equalized) < spread(folded)


def test_mobilenet_v2_after_fold_batchnorm():
    model = with_statistics(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)).double()
    folded = fold_batchnorm(model)
    equalized = equalize(folded, fold_bn=False)  # relu6="replace": the paper's ReLU6 -> ReLU
    assert not any(isinstance(m, nn.ReLU6) for m in equalized.modules())
    reference = fold_batchnorm(model)
    for name, module in list(reference.named_modules()):  # the same network with ReLU
        if isinstance(module, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(reference.get_submodule(parent), child, nn.ReLU())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(equalized(x), reference(x), rtol=1e-5, atol=1e-5)
    pairs = equalization_pairs(equalized)
    depthwise = {name for pair in pairs for name in pair if equalized.get_submodule(name).groups > 1}
    assert len(depthwise) == 17 and len(pairs) > 17  # every block's depthwise conv is in a pair
    for r1, r2 in ranges_of_pairs(equalized):
        torch.testing.assert_close(r1, r2, rtol=1e-5, atol=0)


def test_relu6_is_kept_on_request_and_then_ends_a_pair():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU6(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    kept = equalize(model, relu6="keep")
    assert equalization_pairs(kept) == [("2", "4")] and isinstance(kept.get_submodule("1"), nn.ReLU6)
    x = 3 * torch.randn(8, 3, dtype=torch.float64)
    torch.testing.assert_close(kept(x), model(x), rtol=1e-5, atol=1e-5)
    replaced = equalize(model)
    assert equalization_pairs(replaced) == [("0", "2"), ("2", "4")]


def test_masked_weights_stay_masked_and_the_function_is_unchanged():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    apply_mask(model[0], torch.rand(6, 4) > 0.5)
    equalized = equalize(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(equalized(x), model(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(equalized.get_submodule("0").weight == 0, model[0].weight == 0)


def test_batchnorm_between_layers_blocks_a_pair_unless_folded():
    model = separable()
    with pytest.raises(ValueError, match="nothing to equalize"):
        equalize(model, fold_bn=False)
    assert len(equalization_pairs(equalize(model))) == 2


def test_pooling_between_linear_layers_ends_a_pair():
    model = nn.Sequential(nn.Linear(4, 6), nn.MaxPool1d(2), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="nothing to equalize"):
        equalize(model)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"relu6": "clip"}, ValueError, "relu6 must be one of"),
        ({"fold_bn": 1}, TypeError, "fold_bn must be True or False"),
        ({"tol": 0}, ValueError, "tol must be a finite number in"),
        ({"tol": float("nan")}, ValueError, "tol must be a finite number"),
    ],
)
def test_bad_arguments_are_refused_and_the_model_is_unchanged(kwargs, error, match):
    model = separable()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        equalize(model, **kwargs)
    assert unchanged(model, before)


def test_bad_models_are_refused_and_left_unchanged():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        equalize(torch.randn(3))

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.b(x) if x.sum() > 0 else self.a(x)

    with pytest.raises(ValueError, match="torch.fx could not trace"):
        equalize(Branchy())
    quantized = quantize_weights(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    before = snapshot(quantized)
    with pytest.raises(ValueError, match="equalize before quantizing"):
        equalize(quantized)
    assert unchanged(quantized, before)
    broken = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        broken[2].weight[0, 0] = float("nan")
    before = snapshot(broken)
    with pytest.raises(ValueError, match="NaN or infinite"):
        equalize(broken)
    assert unchanged(broken, before)
