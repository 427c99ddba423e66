"""Residual units found in the fx graph, and their removal with compensation."""

import torch
from pruning_models import zero_scale_model
from torch import nn

from minicompress import models
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.layer_pruning import residual_units
from minicompress.pruning.slimming import slim


def test_residual_units_are_found_in_the_graph():
    graph = build_dependency_graph(
        models.build("darknet_tiny"), torch.zeros(1, 1, 28, 28)
    )
    units = residual_units(graph)
    assert [u.name for u in units] == [
        "stages.0.unit0",
        "stages.1.unit0",
        "stages.1.unit1",
        "stages.2.unit0",
        "stages.2.unit1",
    ]
    assert units[0].norm == "stages.0.unit0.conv2.1"
    # torchvision-style blocks apply ReLU after the add: not removable
    assert (
        residual_units(
            build_dependency_graph(models.build("resnet8"), torch.zeros(1, 1, 28, 28))
        )
        == []
    )


def test_layer_removal_with_compensation_matches_the_unpruned_model():
    model = zero_scale_model()
    with torch.no_grad():
        model.stages[2].unit1.conv2[1].weight.zero_()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        pruned = slim(model, 0, "layer", x[:1], units=1)
        assert isinstance(pruned.stages[2].unit1, nn.Identity)
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)
        plain = slim(model, 0, "layer", x[:1], units=1, compensate=False)
        assert (plain(x) - model(x)).abs().max() > 1e-3
