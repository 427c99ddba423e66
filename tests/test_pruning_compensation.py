"""Activation-offset compensation: exact where every reader of a removed zero-scale channel
has no zero padding, exact inside and not at the border of a padded conv."""

import torch
from pruning_models import randomize_bn, zero_channels
from torch import nn

from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import (
    prune_channels,
)
from minicompress.pruning.surgery import remove_channels


class _OneByOne(nn.Module):
    """3x3 conv-BN-leaky, then 1x1 consumers, a residual add and a linear head: every reader of
    a removed channel has no zero padding, so compensation is exact."""

    def __init__(self, head_kernel=1):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 6, head_kernel, padding=head_kernel // 2)
        self.fc = nn.Linear(6, 4)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        y = self.act(self.b1(self.c1(x)))
        y = y + self.act(self.b2(self.c2(y)))
        return self.fc(
            torch.flatten(
                nn.functional.adaptive_avg_pool2d(torch.relu(self.c3(y)), 1), 1
            )
        )


def test_compensation_makes_removing_zero_scale_channels_exact():
    model = randomize_bn(_OneByOne())
    graph = build_dependency_graph(model, torch.zeros(1, 3, 6, 6))
    keep = {graph.group_of("c1").index: torch.tensor([1, 0, 1, 1, 0, 1, 1, 0]).bool()}
    masked = zero_channels(model, graph, keep, beta=False)  # gamma = 0, beta != 0
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        exact = prune_channels(masked, 3 / 8, "bn_scale", x[:1], compensate=True)
        plain = prune_channels(masked, 3 / 8, "bn_scale", x[:1], compensate=False)
        assert exact.c2.in_channels == 5
        torch.testing.assert_close(exact(x), masked(x), atol=1e-5, rtol=0)
        assert (plain(x) - masked(x)).abs().max() > 1e-3  # what compensation buys


def head_map(m, x):
    """The feature map of _OneByOne's padded 3x3 head conv, before pooling."""
    y = m.act(m.b1(m.c1(x)))
    return m.c3(y + m.act(m.b2(m.c2(y))))


def test_compensation_is_exact_inside_but_not_at_the_border_of_a_padded_conv():
    model = randomize_bn(_OneByOne(head_kernel=3))
    graph = build_dependency_graph(model, torch.zeros(1, 3, 6, 6))
    keep = {graph.group_of("c1").index: torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()}
    masked = zero_channels(model, graph, keep, beta=False)
    pruned = remove_channels(
        masked,
        build_dependency_graph(masked, torch.zeros(1, 3, 6, 6)),
        keep,
        compensate=True,
    )
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        difference = (head_map(pruned, x) - head_map(masked, x)).abs()
    assert difference[:, :, 1:-1, 1:-1].max() < 1e-5  # interior: exact
    assert difference[:, :, 0, :].max() > 1e-3  # the border row read zero padding
