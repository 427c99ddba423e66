"""Tests of minicompress.pruning.unstructured against torch.nn.utils.prune and literals."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from minicompress import models
from minicompress.pruning import (
    get_mask,
    prunable_layers,
    prune_by_scores,
    prune_ln_structured,
    prune_to_sparsity,
    prune_unstructured,
    sparsity,
)
from minicompress.pruning.unstructured import drop_lowest


def lenet():
    torch.manual_seed(0)
    return models.build("lenet5")


def torch_masks(net):
    """The masks torch.nn.utils.prune left as `weight_mask` buffers, by layer name."""
    return {name: m.weight_mask.bool() for name, m in prunable_layers(net).items()}


def our_masks(net):
    return {name: get_mask(m) for name, m in prunable_layers(net).items()}


def state(net):
    """Everything a failed call must leave alone: tensors and parametrization status."""
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [parametrize.is_parametrized(m) for m in net.modules()],
    )


def assert_unchanged(net, before):
    tensors, status = state(net)
    assert status == before[1]
    assert tensors.keys() == before[0].keys()
    for key in tensors:
        assert torch.equal(tensors[key], before[0][key]), key


# torch.nn.utils.prune is PyTorch's own reference implementation of these masks: same
# round(amount * alive) rule, same compounding over what is still alive.


def test_layer_magnitude_masks_match_torch_l1_unstructured_when_compounded():
    ours, theirs = lenet(), lenet()
    for amount in (0.37, 0.5, 0.2):
        prune_unstructured(ours, amount, scope="layer")
        for module in prunable_layers(theirs).values():
            torch_prune.l1_unstructured(module, "weight", amount=amount)
        for name, mask in torch_masks(theirs).items():
            assert torch.equal(our_masks(ours)[name], mask), (amount, name)


def test_global_magnitude_masks_match_torch_global_unstructured_when_compounded():
    ours, theirs = lenet(), lenet()
    for amount in (0.6, 0.45, 0.3):
        prune_unstructured(ours, amount, scope="global")
        torch_prune.global_unstructured(
            [(m, "weight") for m in prunable_layers(theirs).values()],
            pruning_method=torch_prune.L1Unstructured,
            amount=amount,
        )
        for name, mask in torch_masks(theirs).items():
            assert torch.equal(our_masks(ours)[name], mask), (amount, name)


def test_global_pruning_with_exclude_matches_torch_on_the_remaining_layers():
    ours, theirs = lenet(), lenet()
    prune_unstructured(ours, 0.8, exclude=["conv1", "fc3"])
    layers = prunable_layers(theirs, exclude=["conv1", "fc3"])
    torch_prune.global_unstructured(
        [(m, "weight") for m in layers.values()],
        pruning_method=torch_prune.L1Unstructured,
        amount=0.8,
    )
    for name, module in layers.items():
        assert torch.equal(our_masks(ours)[name], module.weight_mask.bool())
    assert get_mask(ours.conv1).all() and get_mask(ours.fc3).all()


def test_magnitude_pruning_of_a_literal_weight():
    net = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.1, -5.0, 0.3], [-0.2, 4.0, 0.05]]))
    prune_unstructured(net, 0.5)  # 3 of 6 weights: |0.05|, |0.1|, |-0.2|
    assert torch.equal(
        get_mask(net[0]), torch.tensor([[False, True, True], [False, True, False]])
    )


def test_global_scope_prunes_small_layers_more_and_layer_scope_evenly():
    net = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with torch.no_grad():
        net[0].weight.fill_(0.01).add_(
            torch.rand(10, 10) * 1e-3
        )  # a layer of small weights
        net[1].weight.fill_(1.0).add_(torch.rand(10, 10) * 1e-3)
    glob = prune_unstructured(copy.deepcopy(net), 0.5, scope="global")
    assert sparsity(glob, per_layer=True) == {"0": 1.0, "1": 0.0}
    local = prune_unstructured(copy.deepcopy(net), 0.5, scope="layer")
    assert sparsity(local, per_layer=True) == {"0": 0.5, "1": 0.5}


def test_random_pruning_removes_exactly_the_rounded_amount_and_is_seeded():
    net = lenet()
    torch.manual_seed(1)
    a = prune_unstructured(copy.deepcopy(net), 0.3, method="random", scope="layer")
    torch.manual_seed(1)
    b = prune_unstructured(copy.deepcopy(net), 0.3, method="random", scope="layer")
    for name, module in prunable_layers(a).items():
        mask = get_mask(module)
        assert int((~mask).sum()) == round(0.3 * mask.numel())
        assert torch.equal(mask, get_mask(prunable_layers(b)[name]))
    magnitude = prune_unstructured(copy.deepcopy(net), 0.3, scope="layer")
    assert not torch.equal(get_mask(a.fc1), get_mask(magnitude.fc1))


def test_random_global_pruning_compounds_on_what_is_alive():
    net = prune_unstructured(lenet(), 0.5, method="random")
    total = sum(m.weight.numel() for m in prunable_layers(net).values())
    alive = total - round(0.5 * total)
    prune_unstructured(net, 0.5, method="random")
    masked = sum(int((~get_mask(m)).sum()) for m in prunable_layers(net).values())
    assert masked == total - alive + round(0.5 * alive)


def test_prune_by_scores_drops_the_lowest_scores_including_negative_ones():
    net = nn.Sequential(nn.Linear(2, 2, bias=False))
    scores = {"0": torch.tensor([[-3.0, 1.0], [2.0, -0.5]])}
    prune_by_scores(net, scores, 0.5)
    assert torch.equal(get_mask(net[0]), torch.tensor([[False, True], [True, False]]))


def test_prune_by_scores_rejects_unknown_layers_and_wrong_shapes():
    net = lenet()
    before = state(net)
    with pytest.raises(ValueError, match="not prunable layers"):
        prune_by_scores(net, {"fc9": torch.ones(1)}, 0.5)
    with pytest.raises(
        ValueError, match=r"scores\['fc3'\] must be a tensor of shape \(10, 84\)"
    ):
        prune_by_scores(net, {"fc3": torch.ones(84, 10)}, 0.5)
    with pytest.raises(TypeError, match="scores must be a non-empty dict"):
        prune_by_scores(net, {}, 0.5)
    assert_unchanged(net, before)


def test_prune_to_sparsity_hits_the_target_count_and_never_unprunes():
    net = lenet()
    total = sum(m.weight.numel() for m in prunable_layers(net).values())
    prune_to_sparsity(net, 0.5)
    prune_to_sparsity(net, 0.9)
    assert sparsity(net) == round(0.9 * total) / total
    prune_to_sparsity(net, 0.3)  # already sparser: nothing happens
    assert sparsity(net) == round(0.9 * total) / total
    net = prune_to_sparsity(lenet(), 0.95, scope="layer")
    for name, value in sparsity(net, per_layer=True).items():
        n = prunable_layers(net)[name].weight.numel()
        assert value == round(0.95 * n) / n


@pytest.mark.parametrize("n, dim", [(1, 0), (2, 0), (2, 1), (math.inf, 0), (2, -1)])
def test_ln_structured_masks_match_torch_ln_structured_when_compounded(n, dim):
    ours, theirs = lenet(), lenet()
    for amount in (0.25, 0.4):
        prune_ln_structured(ours, amount, n=n, dim=dim)
        for module in prunable_layers(theirs).values():
            torch_prune.ln_structured(module, "weight", amount=amount, n=n, dim=dim)
        for name, mask in torch_masks(theirs).items():
            assert torch.equal(our_masks(ours)[name], mask), (amount, name)


def test_ln_structured_zeroes_whole_rows_of_a_literal_weight():
    net = nn.Sequential(nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 4.0], [0.1, 0.1], [1.0, -1.0]]))
    prune_ln_structured(net, 0.34)  # round(0.34 * 3) = 1 row: the norm-0.14 one
    assert torch.equal(
        get_mask(net[0]), torch.tensor([[True, True], [False, False], [True, True]])
    )


def test_ln_structured_rejects_a_bad_norm_or_dim_and_changes_nothing():
    net = lenet()
    before = state(net)
    with pytest.raises(ValueError, match=r"n \(or math.inf\) must be a finite number > 0"):
        prune_ln_structured(net, 0.5, n=0)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 1\] for layer 'fc1'"):
        prune_ln_structured(net, 0.5, dim=3)
    with pytest.raises(TypeError, match="dim must be an int"):
        prune_ln_structured(net, 0.5, dim=0.0)
    assert_unchanged(net, before)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"amount": 1.0}, ValueError, r"amount must be a float in \[0, 1\), got 1.0"),
        ({"amount": -0.1}, ValueError, r"amount must be a float in \[0, 1\), got -0.1"),
        ({"amount": float("nan")}, ValueError, "amount must be a float"),
        ({"amount": "0.5"}, TypeError, "amount must be a float"),
        ({"amount": True}, TypeError, "amount must be a float"),
        (
            {"amount": 0.5, "method": "l2"},
            ValueError,
            "method must be one of 'magnitude', 'random'; got 'l2'",
        ),
        (
            {"amount": 0.5, "scope": "net"},
            ValueError,
            "scope must be one of 'global', 'layer'; got 'net'",
        ),
        (
            {"amount": 0.5, "exclude": ["fc4"]},
            ValueError,
            "fc4.*allowed names: conv1, conv2, fc1, fc2, fc3",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_the_model_unchanged(
    kwargs, error, message
):
    net = prune_unstructured(lenet(), 0.2, exclude=["fc3"])  # partly pruned already
    before = state(net)
    with pytest.raises(error, match=message):
        prune_unstructured(net, **kwargs)
    assert_unchanged(net, before)


def test_a_model_without_prunable_layers_is_an_error():
    net = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    before = state(net)
    with pytest.raises(ValueError, match="no prunable layers"):
        prune_unstructured(net, 0.5)
    assert_unchanged(net, before)


def test_amount_zero_masks_nothing():
    net = prune_unstructured(lenet(), 0.0)
    assert sparsity(net) == 0.0


def test_drop_lowest_removes_the_k_lowest_alive_scores_of_a_group():
    # Worked by hand: alive scores 4, 1 (layer a) and 2, 5 (layer b); the dead entry of a
    # (score 0.5) does not compete. Dropping k = 2 removes the scores 1 and 2.
    scores = [torch.tensor([4.0, 1.0, 0.5]), torch.tensor([2.0, 5.0])]
    masks = [torch.tensor([True, True, False]), torch.tensor([True, True])]
    new = drop_lowest(scores, masks, 2)
    assert [m.tolist() for m in new] == [[True, False, False], [False, True]]
    assert [m.tolist() for m in masks] == [
        [True, True, False],
        [True, True],
    ]  # inputs kept
    assert [m.tolist() for m in drop_lowest(scores, masks, 0)] == [
        m.tolist() for m in masks
    ]
