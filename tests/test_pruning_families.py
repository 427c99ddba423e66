"""torchvision's model families, one small member each (built from torchvision's own blocks,
weights=None): one `prune_channels` call keeps the output shape and removes MACs, removing
channels that were zeroed changes no output, and each family's own structure is cut
consistently. The full-size models are measured in benchmarks/torchvision_families.py."""

import copy

import pytest
import torch
from torch import nn
from torchvision.models import (
    convnext,
    efficientnet,
    regnet,
    resnet,
    shufflenetv2,
    swin_transformer,
    vision_transformer,
)

from minicompress import measure
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import prune_channels
from minicompress.pruning.surgery import remove_channels

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def resnext():  # grouped 3x3 convs, 4 groups (Xie et al. 2017)
    return resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4)


def regnet_x():  # grouped convs of group width 8 (Radosavovic et al. 2020)
    params = regnet.BlockParams.from_init_params(4, 16, 8.0, 2.0, group_width=8)
    return regnet.RegNet(params, num_classes=10)


def efficientnet_b0():  # squeeze-and-excitation, stochastic depth (Tan & Le 2019)
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)  # fmt: skip
    return efficientnet.EfficientNet(setting, 0.2, stochastic_depth_prob=0.2, num_classes=10, last_channel=last)  # fmt: skip


def convnext_tiny():  # permute + LayerNorm + Linear blocks, layer scale (Liu et al. 2022)
    config = convnext.CNBlockConfig
    return convnext.ConvNeXt(
        [config(8, 16, 1), config(16, None, 1)], 0.1, num_classes=10
    )


def shufflenet():  # chunk, concatenation and channel shuffle (Ma et al. 2018)
    return shufflenetv2.ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


def vit():  # class token, fixed-size reshape, attention, MLP blocks (Dosovitskiy et al. 2021)
    return vision_transformer.VisionTransformer(32, 16, 1, 2, 16, 32, num_classes=10)


def swin():  # shifted-window attention, patch merging (Liu et al. 2021)
    return swin_transformer.SwinTransformer(
        [4, 4], 16, [1, 1], [1, 2], [2, 2], num_classes=10
    )


FAMILIES = [resnext, regnet_x, efficientnet_b0, convnext_tiny, shufflenet, vit, swin]


@pytest.mark.parametrize("build", FAMILIES, ids=lambda b: b.__name__)
def test_one_call_prunes_the_family_and_keeps_the_output_shape(build):
    torch.manual_seed(0)
    model = build().eval()
    pruned = prune_channels(model, 0.5, "l1", X[:1])
    assert measure.macs(pruned, X[:1]) < 0.97 * measure.macs(model, X[:1])
    with torch.no_grad():
        assert (
            pruned(X).shape
            == model(X).shape
            == (2, 10 if build is not resnext else 1000)
        )


def zeroed(model, graph, keep):
    """The model with the channels `keep` drops zeroed in every layer that produces them."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for index, mask in keep.items():
            group = graph.groups[index]
            for name in group.sources + group.norms + group.channelwise:
                module = masked.get_submodule(name)
                removed = ~mask[graph.layers[name].out_channel]
                module.weight[removed] = 0
                if module.bias is not None:
                    module.bias[removed] = 0
    return masked


def quarter_of_every_group(graph):
    generator, keep = torch.Generator().manual_seed(1), {}
    for group in graph.groups:
        if group.prunable and group.size > 1:
            keep[group.index] = torch.ones(group.size, dtype=torch.bool)
            keep[group.index][torch.randperm(group.size, generator=generator)[: group.size // 4]] = False  # fmt: skip
    return keep


# ConvNeXt and the stream of a transformer normalize over channels (LayerNorm), so removing a
# zeroed channel changes the others' normalization there: exactness is for the rest.
@pytest.mark.parametrize("build", [resnext, regnet_x, efficientnet_b0, shufflenet, vit, swin], ids=lambda b: b.__name__)  # fmt: skip
def test_removing_zeroed_channels_changes_no_output(build):
    torch.manual_seed(0)
    model = build().eval()
    graph = build_dependency_graph(model, X[:1])
    keep = quarter_of_every_group(graph)
    masked = zeroed(model, graph, keep)
    pruned = remove_channels(masked, build_dependency_graph(masked, X[:1]), keep)
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), masked(X), atol=1e-6, rtol=1e-5)


def test_grouped_convs_lose_the_same_channels_in_every_group():
    model = resnext().eval()
    pruned = prune_channels(model, 0.5, "l1", X[:1])
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.groups > 1:
            small = pruned.get_submodule(name)
            assert small.groups == conv.groups == 4
            assert small.in_channels == small.out_channels == conv.in_channels // 2
            torch.testing.assert_close(small(torch.ones(1, small.in_channels, 4, 4)).shape[1], small.out_channels)  # fmt: skip


def test_layernorm_and_layer_scale_are_cut_with_their_channels():
    model = convnext_tiny().eval()
    graph = build_dependency_graph(model, X[:1])
    # the first stage's stream (8 channels), which pwconv1 reads
    group = graph.groups[int(graph.layers["features.1.0.block.3"].in_group[0])]
    assert (
        group.prunable and "features.1.0.block.2" in group.channelwise
    )  # the LayerNorm
    assert group.parameters == ["features.1.0.layer_scale"]
    keep = torch.arange(group.size) % 4 != 1  # drop channels 1 and 5
    pruned = remove_channels(model, graph, {group.index: keep})
    norm, old = pruned.features[1][0].block[2], model.features[1][0].block[2]
    assert group.size == 8 and norm.normalized_shape == (6,)
    torch.testing.assert_close(norm.weight, old.weight[keep])
    torch.testing.assert_close(
        pruned.features[1][0].layer_scale, model.features[1][0].layer_scale[keep]
    )
    torch.testing.assert_close(
        pruned.features[0][1].weight, model.features[0][1].weight[keep]
    )  # LayerNorm2d
    with torch.no_grad():
        assert pruned(X).shape == (2, 10)


def test_shuffle_and_chunk_keep_their_halves_equal():
    model = shufflenet().eval()
    pruned = prune_channels(model, 0.5, "l1", X[:1])
    for name, module in pruned.named_modules():
        if isinstance(module, shufflenetv2.InvertedResidual) and module.stride == 1:
            half = module.branch2[0].in_channels
            assert (
                module.branch2[-3].out_channels == half
            )  # chunk(2) splits equal halves


@pytest.mark.parametrize("build", [vit, swin], ids=lambda b: b.__name__)
def test_transformers_lose_mlp_hidden_units_and_keep_their_stream(build):
    model = build().eval()
    graph = build_dependency_graph(model, X[:1])
    hidden = [g for g in graph.groups if g.prunable]
    assert hidden and all(
        len(g.sources) == 1 and g.size in (32, 64, 128) for g in hidden
    )
    stream = graph.group_of("conv_proj" if build is vit else "features.0.0")
    assert not stream.prunable and "not followed inside" in stream.reason


def test_a_model_that_cannot_be_pruned_names_the_node_and_why():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(2)
    )
    model(X)
    with pytest.raises(
        ValueError, match=r"node '_1' \(call_module 1\): module of type GroupNorm"
    ):
        prune_channels(model, 0.5, "l1", X[:1])
