"""Tests of minicompress.pruning.masks: the Mask parametrization and what works on it."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress.pruning import (
    Mask,
    apply_mask,
    get_mask,
    is_pruned,
    make_permanent,
    prunable_layers,
    sparsity,
)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 3),
    )


def test_mask_multiplies_the_weight_and_keeps_its_dtype():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64)
    mask = Mask(torch.tensor([[True, False], [False, True]]))
    out = mask(weight)
    assert out.dtype == torch.float64
    torch.testing.assert_close(
        out, torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    )
    assert "kept=2/4" in repr(mask)


def test_mask_rejects_a_non_tensor():
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        Mask([[True]])


def test_apply_mask_combines_with_the_existing_mask_without_stacking():
    layer = nn.Linear(2, 2)
    apply_mask(layer, torch.tensor([[True, True], [False, True]]))
    apply_mask(layer, torch.tensor([[True, False], [True, True]]))
    assert len(layer.parametrizations.weight) == 1
    assert torch.equal(get_mask(layer), torch.tensor([[True, False], [False, True]]))
    assert layer.weight[0, 1] == 0 and layer.weight[1, 0] == 0


def test_apply_mask_with_a_wrong_shape_is_an_error_and_changes_nothing():
    layer = nn.Linear(2, 3)
    with pytest.raises(
        ValueError, match=r"mask has shape \(2, 2\) but weight has shape \(3, 2\)"
    ):
        apply_mask(layer, torch.ones(2, 2, dtype=torch.bool))
    assert not parametrize.is_parametrized(layer)


def test_get_mask_is_all_true_on_an_unpruned_layer():
    layer = nn.Linear(3, 2)
    assert not is_pruned(layer)
    assert get_mask(layer).all() and get_mask(layer).shape == (2, 3)


def test_sparsity_counts_zeros_over_conv_and_linear_weights_only():
    net = small_net()
    apply_mask(net[0], torch.zeros(2, 1, 3, 3, dtype=torch.bool))  # 18 of 18 zero
    mask = torch.ones(3, 32, dtype=torch.bool)
    mask[0, :24] = False  # 24 of 96 zero
    apply_mask(net[3], mask)
    with torch.no_grad():
        net[3].bias.zero_()  # biases never count
    assert sparsity(net) == pytest.approx((18 + 24) / (18 + 96))
    assert isinstance(sparsity(net), float)
    assert sparsity(net, per_layer=True) == {"0": 1.0, "3": 0.25}


def test_masked_weights_stay_zero_through_training():
    net = small_net()
    mask = torch.rand(3, 32) > 0.5
    apply_mask(net[3], mask)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(3):
        loss = net(torch.randn(4, 1, 6, 6)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (net[3].weight[~mask] == 0).all()
    assert (net[3].weight[mask] != 0).all()


def test_state_dict_round_trips_between_masked_models():
    net = small_net()
    apply_mask(net[3], torch.rand(3, 32) > 0.5)
    other = small_net()
    apply_mask(other[3], torch.ones(3, 32, dtype=torch.bool))
    other.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(other(x), net(x))
    assert "3.parametrizations.weight.0.mask" in net.state_dict()


def test_make_permanent_keeps_outputs_and_the_parameter_object():
    net = small_net()
    apply_mask(net[3], torch.rand(3, 32) > 0.5)
    original = net[3].parametrizations.weight.original
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 1, 6, 6)
    before = net(x)
    make_permanent(net)
    assert not parametrize.is_parametrized(net[3])
    assert net[3].weight is original  # the optimizer's parameter is still the layer's
    torch.testing.assert_close(net(x), before)
    net(x).sum().backward()
    old = net[3].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(net[3].weight.detach(), old)


class Double(nn.Module):
    def forward(self, weight):
        return 2 * weight


def test_make_permanent_bakes_a_first_mask_under_another_parametrization():
    layer = nn.Linear(2, 2)
    apply_mask(layer, torch.tensor([[True, False], [True, True]]))
    parametrize.register_parametrization(layer, "weight", Double())
    expected = layer.weight.detach().clone()
    make_permanent(layer)
    assert len(layer.parametrizations.weight) == 1
    assert isinstance(layer.parametrizations.weight[0], Double)
    torch.testing.assert_close(layer.weight, expected)


def test_make_permanent_refuses_a_mask_after_another_parametrization():
    layer = nn.Linear(2, 2)
    parametrize.register_parametrization(layer, "weight", Double())
    apply_mask(layer, torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match="cannot be baked"):
        make_permanent(layer)
    assert len(layer.parametrizations.weight) == 2


def test_prunable_layers_lists_conv_and_linear_and_honours_exclude():
    net = small_net()
    assert list(prunable_layers(net)) == ["0", "3"]
    assert list(prunable_layers(net, exclude="3")) == ["0"]
    assert list(prunable_layers(net, exclude=["0"])) == ["3"]


def test_prunable_layers_errors_name_what_is_allowed():
    with pytest.raises(ValueError, match="no prunable layers"):
        prunable_layers(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match=r"\['fc9'\].*allowed names: 0, 3"):
        prunable_layers(small_net(), exclude=["fc9"])
    with pytest.raises(ValueError, match="leaves no layer"):
        prunable_layers(small_net(), exclude=["0", "3"])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        prunable_layers("lenet5")


def test_make_permanent_on_a_deepcopy_leaves_the_original_masked_and_working():
    # torch gives a deepcopy the same injected ParametrizedLinear class; removing the
    # copy's parametrization must not strip the original's `weight` property.
    net = small_net()
    apply_mask(net[3], torch.rand(3, 32) > 0.5)
    twin = make_permanent(copy.deepcopy(net))
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(net(x), twin(x))
    assert is_pruned(net[3]) and not is_pruned(twin[3])
    make_permanent(net)
    torch.testing.assert_close(net(x), twin(x))


def test_the_package_exports_the_sparsity_function_not_a_module():
    # A submodule named like a function would replace it on the package when imported.
    import minicompress.pruning

    assert callable(minicompress.pruning.sparsity)
