"""The channel criteria cores on hand-worked tensors, and channel_scores feeding them."""

import pytest
import torch
from torch import nn

from minicompress import models
from minicompress.pruning import criteria
from minicompress.pruning.criteria import CRITERIA, channel_scores
from minicompress.pruning.dependency import build_dependency_graph

# Three filters of four weights, written out; the expected scores below are worked by hand.
FILTERS = torch.tensor([[1.0, -2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [3.0, 0.0, 0.0, -4.0]])


def test_l1_and_l2_cores_are_the_row_norms():
    torch.testing.assert_close(criteria.l1_scores(FILTERS), torch.tensor([3.0, 2.0, 7.0]))
    torch.testing.assert_close(criteria.l2_scores(FILTERS), torch.tensor([5**0.5, 1.0, 5.0]))


def test_fpgm_core_sums_the_distances_to_the_other_filters():
    # |f0 - f1| = sqrt(7), |f0 - f2| = sqrt(24), |f1 - f2| = sqrt(27)
    d01, d02, d12 = 7**0.5, 24**0.5, 27**0.5
    expected = torch.tensor([d01 + d02, d01 + d12, d02 + d12])
    torch.testing.assert_close(criteria.fpgm_scores(FILTERS), expected)


def test_bn_scale_core_sums_the_magnitudes_of_coupled_scales():
    scales = torch.tensor([[0.5, -0.25], [-2.0, 0.0], [0.1, 0.1]])  # (C, L): two BatchNorms
    torch.testing.assert_close(criteria.bn_scale_scores(scales), torch.tensor([0.75, 2.0, 0.2]))


def test_taylor_core_is_the_mean_squared_gate_gradient():
    gradients = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, -1.0]])  # (B, C)
    torch.testing.assert_close(criteria.taylor_scores(gradients), torch.tensor([5.0, 2.0, 0.5]))


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
    with pytest.raises(ValueError, match=r"the weight of 'conv2' holds 1 NaN or infinite"):
        channel_scores(model, graph, "l1")


def test_random_scores_come_from_the_seed():
    model = models.build("lenet5")
    graph = build_dependency_graph(model, torch.zeros(1, 1, 28, 28))
    a, b = channel_scores(model, graph, "random", seed=3), channel_scores(model, graph, "random", seed=3)
    c = channel_scores(model, graph, "random", seed=4)
    assert all(torch.equal(a[i], b[i]) for i in a) and not torch.equal(a[0], c[0])
