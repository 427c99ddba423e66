"""Tests of minicompress.pruning.n_m: the exact N:M pattern on literal tensors."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import models
from minicompress.pruning import (
    get_mask,
    n_m_mask,
    prune_n_m,
    prune_unstructured,
    sparsity,
)


def test_two_four_pattern_of_a_literal_linear_weight():
    weight = torch.tensor(
        [
            [1.0, -4.0, 3.0, 2.0, 0.5, 6.0, -7.0, 8.0],
            [-9.0, 0.1, 0.2, 5.0, 1.0, 1.0, 0.0, -1.5],
        ]
    )
    expected = torch.tensor(
        [
            [False, True, True, False, False, False, True, True],
            [True, False, False, True, False, False, False, True],
        ]
    )
    # Row 2, second group: |-1.5| wins, then the tie 1.0 / 1.0 keeps the earlier position.
    expected[1, 4] = True
    assert torch.equal(n_m_mask(weight, 2, 4), expected)


def test_conv_weights_are_grouped_over_c_in_times_kh_times_kw():
    # (C_out=1, C_in=2, kH=1, kW=2): flattened row [1, 5, -6, 2] -> 2:4 keeps 5 and -6.
    weight = torch.tensor([[[[1.0, 5.0]], [[-6.0, 2.0]]]])
    assert torch.equal(
        n_m_mask(weight, 2, 4), torch.tensor([[[[False, True]], [[True, False]]]])
    )


def test_one_of_two_and_a_short_last_group():
    weight = torch.tensor([[3.0, -1.0, 0.5, 2.0, -7.0]])
    # 1:2 -> groups [3, -1], [0.5, 2], [-7] (short, keeps its only entry).
    assert torch.equal(
        n_m_mask(weight, 1, 2), torch.tensor([[True, False, False, True, True]])
    )
    # 2:4 with K = 5: the last group holds one weight and keeps it.
    assert n_m_mask(weight, 2, 4).tolist() == [[True, False, False, True, True]]


def test_n_equal_to_m_keeps_everything():
    assert n_m_mask(torch.randn(3, 8), 4, 4).all()


def test_matches_torch_ao_weight_norm_sparsifier_on_two_four():
    # torch.ao's sparsifier, with blocks of (1, 4) and 2 zeros per block, is PyTorch's own
    # 2:4 mask (kept for as long as torch ships torch.ao.pruning).
    pruning = pytest.importorskip("torch.ao.pruning")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 16))
    weight = net[0].weight.detach().clone()
    sparsifier = pruning.WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2
    )
    sparsifier.prepare(net, config=[{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    theirs = net[0].parametrizations.weight[0].mask.bool()
    assert torch.equal(n_m_mask(weight, 2, 4), theirs)


def test_prune_n_m_gives_every_group_at_most_n_nonzeros():
    torch.manual_seed(0)
    net = prune_n_m(models.build("lenet300"), 2, 4)
    assert sparsity(net) == 0.5  # 784, 300 and 100 inputs are multiples of 4
    for module in (net.features[0], net.features[2], net.classifier):
        groups = (module.weight != 0).reshape(module.weight.shape[0], -1, 4)
        assert (groups.sum(-1) == 2).all()


def test_prune_n_m_combines_with_an_existing_mask():
    torch.manual_seed(0)
    net = prune_unstructured(models.build("lenet300"), 0.7)
    before = {
        name: get_mask(m) for name, m in net.named_modules() if isinstance(m, nn.Linear)
    }
    prune_n_m(net, 2, 4)
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            mask = get_mask(module)
            assert not (mask & ~before[name]).any()  # nothing pruned comes back
            assert (mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all()
            assert len(module.parametrizations.weight) == 1


@pytest.mark.parametrize(
    "n, m, error, message",
    [
        (3, 2, ValueError, r"n must be an int in \[1, m\] = \[1, 2\].*got 3"),
        (0, 4, ValueError, r"n must be an int in \[1, m\]"),
        (1, 0, ValueError, r"m \(the group size\) must be an int >= 1"),
        (2.0, 4, TypeError, "n must be an int"),
    ],
)
def test_bad_n_or_m_is_an_error_and_leaves_the_model_unchanged(n, m, error, message):
    net = models.build("lenet5")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=message):
        prune_n_m(net, n, m)
    assert not any(parametrize.is_parametrized(x) for x in net.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with pytest.raises(error, match=message):
        n_m_mask(torch.ones(2, 4), n, m)


def test_a_one_dimensional_tensor_is_rejected():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        n_m_mask(torch.ones(4), 2, 4)
