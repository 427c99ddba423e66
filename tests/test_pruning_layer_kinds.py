"""The layer-kind table: which kind each module is, how each kind couples its channels and how
it is cut, each checked against the module computing on the kept channels by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from minicompress.pruning.layer_kinds import KINDS, PRODUCERS, layer_kind

X = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "module, kind",
    [
        (nn.Conv2d(8, 4, 3), "conv"),
        (nn.Conv2d(8, 4, 3, groups=2), "grouped"),
        (nn.Conv2d(8, 16, 3, groups=8), "depthwise"),
        (nn.Linear(8, 4), "linear"),
        (nn.BatchNorm2d(8), "norm"),
        (nn.LayerNorm(8), "layernorm"),
        (nn.ConvTranspose2d(8, 4, 3), None),
        (nn.LayerNorm((4, 8)), None),
        (nn.GroupNorm(2, 8), None),
    ],
)
def test_each_module_has_one_kind_or_none(module, kind):
    assert layer_kind(module) == kind
    assert set(KINDS) == {"conv", "grouped", "depthwise", "linear", "norm", "layernorm"}
    assert set(PRODUCERS) <= set(KINDS)


def couple(module):
    """Rows and cols of `module` for input channels 0..C_in-1, with a union-find by hand."""
    parent = list(range(100))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    def union(a, b):
        for x, y in zip(a.tolist(), b.tolist()):
            parent[max(find(x), find(y))] = min(find(x), find(y))

    fresh = iter(range(50, 100))
    new = lambda n: np.array([next(fresh) for _ in range(n)])  # noqa: E731
    channels = (
        module.in_channels
        if hasattr(module, "in_channels")
        else module.weight.shape[-1]
    )
    rows, cols = KINDS[layer_kind(module)].couple(
        module, np.arange(channels), union, new
    )
    roots = lambda a: None if a is None else [find(int(x)) for x in a]  # noqa: E731
    return roots(rows), roots(cols)


def test_a_grouped_conv_ties_channel_j_of_every_group():
    rows, cols = couple(nn.Conv2d(8, 6, 3, groups=2))
    assert cols == [0, 1, 2, 3]  # input channel j of group 1 is channel j of group 0
    assert rows == [50, 51, 52, 50, 51, 52]  # output row j of each group: one channel


def test_a_depthwise_conv_passes_each_input_channel_to_its_rows():
    rows, cols = couple(nn.Conv2d(4, 8, 3, groups=4))  # depth multiplier 2
    assert rows == [0, 0, 1, 1, 2, 2, 3, 3] and cols is None


@pytest.mark.parametrize(
    "module, rows, cols",
    [
        (nn.Conv2d(8, 4, 3), [True, False, True, True], [True] * 6 + [False, True]),
        (
            nn.Conv2d(8, 6, 3, groups=2),
            [True, False, True] * 2,
            [True, False, True, True],
        ),
        (nn.Conv2d(8, 16, 3, groups=8), [True, True, False, False] * 4, None),
        (nn.BatchNorm2d(8), [True, False] * 4, None),
    ],
)
def test_a_cut_module_computes_the_kept_rows_of_the_kept_inputs(module, rows, cols):
    module.eval()
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_()
        rows, cols = torch.tensor(rows), None if cols is None else torch.tensor(cols)
        inputs = X.clone()
        if cols is not None:  # a removed input channel reads zero in the full layer
            groups = module.groups
            inputs[:, ~cols.repeat(groups)] = 0
        kept_in = (
            cols.repeat(module.groups)
            if cols is not None
            else _kept_inputs(module, rows)
        )
        expected = module(inputs)[:, rows]
        KINDS[layer_kind(module)].cut(module, rows, cols)
        torch.testing.assert_close(module(inputs[:, kept_in]), expected)


def _kept_inputs(module, rows):
    # depthwise and norms: an input channel stays when its rows do
    per = rows.numel() // (
        module.in_channels if hasattr(module, "in_channels") else rows.numel()
    )
    return rows.view(-1, per).any(1)


def test_linear_and_layernorm_cut_along_the_last_dim():
    tokens = torch.randn(2, 3, 8)
    linear, norm = nn.Linear(8, 4), nn.LayerNorm(4)
    rows, cols = (
        torch.tensor([True, False, True, True]),
        torch.tensor([True] * 6 + [False] * 2),
    )
    with torch.no_grad():
        expected = linear(tokens * cols)[..., rows]
        KINDS["linear"].cut(linear, rows, cols)
        torch.testing.assert_close(linear(tokens[..., cols]), expected)
        nn.init.uniform_(norm.weight)
        kept = norm.weight[rows].clone()
        KINDS["layernorm"].cut(norm, rows, None)
    assert norm.normalized_shape == (3,) and torch.equal(norm.weight, kept)
