"""select_channels: kept counts from amount, min_channels and round_to; one threshold for
scope "global"."""

from pruning_models import X28

from minicompress import models
from minicompress.pruning.criteria import channel_scores
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import (
    prune_channels,
    select_channels,
)


def test_min_channels_and_round_to_set_the_kept_counts():
    model = models.build("resnet8")  # groups of 16, 32 and 64 channels
    pruned = prune_channels(model, 0.9, "l1", X28, min_channels=4)
    assert (
        pruned.layer1[0].conv1.out_channels == 4
    )  # 16 - floor(14.4) = 2 -> floor of 4
    assert pruned.layer3[0].conv1.out_channels == 7  # 64 - 57
    pruned = prune_channels(model, 0.6, "l1", X28, round_to=8)
    assert pruned.layer1[0].conv1.out_channels == 8  # 16 - 9 = 7 -> up to 8
    assert pruned.layer2[0].conv1.out_channels == 16  # 32 - 19 = 13 -> 16


def test_global_scope_removes_the_fraction_of_all_channels():
    model = models.build("resnet8")
    graph = build_dependency_graph(model, X28)
    scores = channel_scores(model, graph, "random")
    keep = select_channels(graph, scores, 0.4, scope="global")
    total = sum(len(m) for m in keep.values())
    assert total - sum(int(m.sum()) for m in keep.values()) == int(0.4 * total)
    # unlike scope="layer", the groups lose different fractions
    assert len({round(1 - float(m.float().mean()), 2) for m in keep.values()}) > 1
