"""Tests of minicompress.pruning.sensitivity_scan."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress.pruning import (
    prunable_layers,
    prune_unstructured,
    sensitivity_scan,
    sparsity,
)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 4))


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [parametrize.is_parametrized(m) for m in model.modules()],
    )


def assert_same(model, before):
    tensors, status = snapshot(model)
    assert status == before[1] and tensors.keys() == before[0].keys()
    assert all(torch.equal(tensors[k], before[0][k]) for k in tensors)


def test_each_layer_is_pruned_alone_by_each_amount():
    results = sensitivity_scan(
        net(), lambda m: sparsity(m, per_layer=True), [0.0, 0.5, 0.9], progress=False
    )
    # Layer "0" has 80 weights, layer "2" has 40: round(a * n) of them are zero, the
    # other layer stays dense.
    assert results == {
        "0": [{"0": 0.0, "2": 0.0}, {"0": 0.5, "2": 0.0}, {"0": 0.9, "2": 0.0}],
        "2": [{"0": 0.0, "2": 0.0}, {"0": 0.0, "2": 0.5}, {"0": 0.0, "2": 0.9}],
    }


def test_scan_points_equal_layer_pruning_of_a_copy_with_the_others_excluded():
    model = net()
    x = torch.randn(5, 8)
    results = sensitivity_scan(
        model, lambda m: m(x).sum().item(), [0.3, 0.7], progress=False
    )
    for name in prunable_layers(model):
        others = [n for n in prunable_layers(model) if n != name]
        for amount, value in zip([0.3, 0.7], results[name]):
            alone = prune_unstructured(
                copy.deepcopy(model), amount, scope="layer", exclude=others
            )
            assert value == pytest.approx(alone(x).sum().item())


def test_the_model_is_unchanged_afterwards_pruned_or_not():
    for model in (net(), prune_unstructured(net(), 0.5, exclude=["2"])):
        before = snapshot(model)
        sensitivity_scan(model, lambda m: 0.0, [0.5, 0.8], progress=False)
        assert_same(model, before)


def test_amounts_compound_on_an_already_pruned_layer():
    model = prune_unstructured(net(), 0.5, scope="layer")
    results = sensitivity_scan(
        model,
        lambda m: sparsity(m, per_layer=True)["0"],
        [0.5],
        exclude=["2"],
        progress=False,
    )
    assert results == {"0": [0.75]}  # half of the 40 survivors of 80


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"amounts": []}, ValueError, "amounts is empty"),
        (
            {"amounts": [0.5, 1.0]},
            ValueError,
            r"each of amounts must be a float in \[0, 1\), got 1.0",
        ),
        ({"evaluate": "accuracy"}, TypeError, "evaluate must be callable"),
        ({"method": "taylor"}, ValueError, "method must be one of 'magnitude', 'random'; got 'taylor'"),
        ({"exclude": ["fc"]}, ValueError, "allowed names: 0, 2"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, error, message):
    args = {
        "model": net(),
        "evaluate": lambda m: 0.0,
        "amounts": [0.5],
        "progress": False,
    }
    args.update(kwargs)
    with pytest.raises(error, match=message):
        sensitivity_scan(**args)
