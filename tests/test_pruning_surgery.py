"""remove_channels: removing zeroed channels gives the masked model's outputs, BatchNorm
statistics are cut with their channels, malformed keep masks are errors."""

import pytest
import torch
from pruning_models import X28, randomize_bn, zero_channels

from minicompress import measure, models
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import (
    prune_channels,
)
from minicompress.pruning.surgery import remove_channels


@pytest.mark.parametrize(
    "name, criterion",
    [
        ("darknet_tiny", "l1"),
        ("darknet_tiny", "bn_scale"),
        ("resnet8", "l1"),
        ("resnet8", "bn_scale"),
        ("lenet5", "l1"),  # no BatchNorm: conv and linear layers only
    ],
)
def test_removing_zeroed_channels_gives_the_masked_model_outputs(name, criterion):
    model = randomize_bn(models.build(name))
    graph = build_dependency_graph(model, X28)
    generator = torch.Generator().manual_seed(1)
    keep = {}
    for group in graph.groups:
        if group.prunable:  # a random quarter of every group
            keep[group.index] = torch.ones(group.size, dtype=torch.bool)
            keep[group.index][
                torch.randperm(group.size, generator=generator)[: group.size // 4]
            ] = False
    masked = zero_channels(model, graph, keep)
    pruned = prune_channels(masked, 0.25, criterion, X28)
    assert measure.count_params(pruned) < measure.count_params(model)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-5, rtol=0)


def test_bn_statistics_are_cut_and_num_batches_tracked_kept():
    model = randomize_bn(models.build("vgg_small"))
    model.features[0][1].num_batches_tracked.fill_(7)
    pruned = prune_channels(model, 0.5, "bn_scale", X28)
    bn, old = pruned.features[0][1], model.features[0][1]
    kept = old.weight.detach().abs().argsort(descending=True)[:16].sort().values
    for name in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(
            getattr(bn, name).detach(), getattr(old, name).detach()[kept]
        )
    assert bn.num_batches_tracked.item() == 7


def test_remove_channels_rejects_bad_masks():
    model = models.build("resnet8")
    graph = build_dependency_graph(model, X28)
    fc = graph.group_of("fc").index
    with pytest.raises(
        ValueError,
        match=r"group 6 \(sources \['fc'\]\) cannot lose channels: it reaches the model output",
    ):
        remove_channels(model, graph, {fc: torch.arange(10) > 0})
    with pytest.raises(ValueError, match="removes every channel of group 1"):
        remove_channels(model, graph, {1: torch.zeros(16, dtype=torch.bool)})
    with pytest.raises(
        ValueError, match=r"keep\[1\] must have shape \(16,\), got \(8,\)"
    ):
        remove_channels(model, graph, {1: torch.ones(8, dtype=torch.bool)})
    with pytest.raises(TypeError, match=r"keep\[1\] must be a bool tensor"):
        remove_channels(model, graph, {1: torch.ones(16)})
    with pytest.raises(ValueError, match="graph does not describe this model"):
        remove_channels(models.build("resnet8"), graph, {})
