"""The channel criteria cores on hand-worked tensors, and channel_scores feeding them."""

import pytest
import torch
from pruning_models import X28
from torch import nn

from minicompress import models
from minicompress.pruning import criteria
from minicompress.pruning.criteria import CRITERIA, channel_scores
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import (
    prune_channels,
)

# Three filters of four weights, written out; the expected scores below are worked by hand.
FILTERS = torch.tensor(
    [[1.0, -2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [3.0, 0.0, 0.0, -4.0]]
)


def test_l1_and_l2_cores_are_the_row_norms():
    torch.testing.assert_close(
        criteria.l1_scores(FILTERS), torch.tensor([3.0, 2.0, 7.0])
    )
    torch.testing.assert_close(
        criteria.l2_scores(FILTERS), torch.tensor([5**0.5, 1.0, 5.0])
    )


def test_fpgm_core_sums_the_distances_to_the_other_filters():
    # |f0 - f1| = sqrt(7), |f0 - f2| = sqrt(24), |f1 - f2| = sqrt(27)
    d01, d02, d12 = 7**0.5, 24**0.5, 27**0.5
    expected = torch.tensor([d01 + d02, d01 + d12, d02 + d12])
    torch.testing.assert_close(criteria.fpgm_scores(FILTERS), expected)


def test_bn_scale_core_sums_the_magnitudes_of_coupled_scales():
    scales = torch.tensor(
        [[0.5, -0.25], [-2.0, 0.0], [0.1, 0.1]]
    )  # (C, L): two BatchNorms
    torch.testing.assert_close(
        criteria.bn_scale_scores(scales), torch.tensor([0.75, 2.0, 0.2])
    )


def test_taylor_core_is_the_mean_squared_gate_gradient():
    gradients = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, -1.0]])  # (B, C)
    torch.testing.assert_close(
        criteria.taylor_scores(gradients), torch.tensor([5.0, 2.0, 0.5])
    )


def test_every_criterion_is_a_core_and_what_it_reads():
    assert list(CRITERIA) == ["l1", "l2", "bn_scale", "taylor", "fpgm", "random"]
    for name, (reads, core) in CRITERIA.items():
        assert reads in ("filters", "scales", "gate_gradients", "uniform"), name
        assert core.__name__ == f"{name}_scores"


class _Residual(nn.Module):
    """Two convs whose outputs an add ties: one group of 3 channels with two filters each."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 1, bias=False)
        self.b = nn.Conv2d(1, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        y = self.a(x) + self.b(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_a_coupled_channel_is_scored_by_all_its_filters_side_by_side():
    model = _Residual()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([3.0, 0.0, 1.0]).view(3, 1, 1, 1))
        model.b.weight.copy_(torch.tensor([4.0, 1.0, 0.0]).view(3, 1, 1, 1))
    graph = build_dependency_graph(model, torch.zeros(1, 1, 2, 2))
    index = graph.group_of("a").index
    # channel 0 is produced by the filters (3) and (4): its group filter is (3, 4)
    l2 = channel_scores(model, graph, "l2")[index]
    torch.testing.assert_close(l2, torch.tensor([5.0, 1.0, 1.0]))
    fpgm = channel_scores(model, graph, "fpgm")[index]  # rows (3, 4), (0, 1), (1, 0)
    d01, d02, d12 = 18**0.5, 20**0.5, 2**0.5
    torch.testing.assert_close(fpgm, torch.tensor([d01 + d02, d01 + d12, d02 + d12]))


def test_channel_scores_refuses_a_graph_of_another_model():
    graph = build_dependency_graph(models.build("lenet5"), torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="graph does not describe this model"):
        channel_scores(models.build("lenet5"), graph, "l1")


def test_nan_weights_are_an_error_naming_the_layer():
    model = models.build("lenet5")
    graph = build_dependency_graph(model, torch.zeros(1, 1, 28, 28))
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"the weight of 'conv2' holds 1 NaN or infinite"
    ):
        channel_scores(model, graph, "l1")


def test_random_scores_come_from_the_seed():
    model = models.build("lenet5")
    graph = build_dependency_graph(model, torch.zeros(1, 1, 28, 28))
    a, b = (
        channel_scores(model, graph, "random", seed=3),
        channel_scores(model, graph, "random", seed=3),
    )
    c = channel_scores(model, graph, "random", seed=4)
    assert all(torch.equal(a[i], b[i]) for i in a) and not torch.equal(a[0], c[0])


# -- through channel_scores, on small models ----------------------------------------------


class _Head(nn.Module):
    """conv(3 filters) -> BN -> ReLU -> pool -> linear: one prunable group of 3 channels."""

    def __init__(self, weight=None, gamma=None):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 2, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            if weight is not None:
                self.conv.weight.copy_(torch.tensor(weight).view(3, 1, 2, 2))
            if gamma is not None:
                self.bn.weight.copy_(torch.tensor(gamma))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


HEAD_FILTERS = FILTERS.tolist()


def scores_of(model, criterion, **kwargs):
    graph = build_dependency_graph(model, torch.zeros(1, 1, 3, 3))
    return channel_scores(model, graph, criterion, **kwargs)[
        graph.group_of("conv").index
    ]


def test_filter_norm_scores_match_hand_computed_values():
    model = _Head(HEAD_FILTERS)
    torch.testing.assert_close(scores_of(model, "l1"), torch.tensor([3.0, 2.0, 7.0]))
    torch.testing.assert_close(scores_of(model, "l2"), torch.tensor([5**0.5, 1.0, 5.0]))
    torch.testing.assert_close(
        scores_of(_Head(gamma=[0.5, -2.0, 0.1]), "bn_scale"),
        torch.tensor([0.5, 2.0, 0.1]),
    )


def test_fpgm_scores_are_summed_distances_to_the_other_filters():
    # |f0 - f1| = sqrt(0.25 + 6.25 + 0.25 + 0.25) = sqrt(7), |f0 - f2| = sqrt(4 + 4 + 0 + 16)
    # = sqrt(24), |f1 - f2| = sqrt(6.25 + 0.25 + 0.25 + 20.25) = sqrt(27)
    d01, d02, d12 = 7**0.5, 24**0.5, 27**0.5
    expected = torch.tensor([d01 + d02, d01 + d12, d02 + d12])
    torch.testing.assert_close(scores_of(_Head(HEAD_FILTERS), "fpgm"), expected)


class _Gated(nn.Module):
    """_Head with an explicit gate z after the BatchNorm, the formulation of Molchanov 2019."""

    def __init__(self, head):
        super().__init__()
        self.head = head
        self.z = nn.Parameter(torch.ones(1, 3, 1, 1))

    def forward(self, x):
        h = self.head
        y = torch.relu(h.bn(h.conv(x)) * self.z)
        return h.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_taylor_score_is_the_squared_gate_gradient():
    torch.manual_seed(0)
    head = _Head(HEAD_FILTERS, gamma=[0.7, 1.2, 0.4]).eval()
    with torch.no_grad():
        head.bn.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))
    batches = [(torch.randn(4, 1, 3, 3), torch.randint(0, 2, (4,))) for _ in range(2)]
    gated = _Gated(head).eval()
    expected = torch.zeros(3)
    for inputs, targets in batches:  # autograd on the gate is the independent reference
        gated.zero_grad()
        nn.functional.cross_entropy(gated(inputs), targets).backward()
        expected += gated.z.grad.flatten() ** 2 / 2
    head.zero_grad(set_to_none=True)
    torch.testing.assert_close(scores_of(head, "taylor", batch=batches), expected)
    assert head.conv.weight.grad is None  # computed on a copy


def test_bn_scale_on_a_model_without_batchnorm_is_an_error():
    with pytest.raises(
        ValueError, match=r"'bn_scale' needs BatchNorm layers; the model has none"
    ):
        prune_channels(models.build("lenet5"), 0.5, "bn_scale", X28)
