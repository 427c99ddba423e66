"""Channel groups read from torch.fx graphs: each coupling rule on a small model whose answer
is written out by hand, then our reference models and two torchvision models."""

import pytest
import torch
import torchvision
from torch import nn

from minicompress import models
from minicompress.pruning.dependency import build_dependency_graph

X28 = torch.zeros(1, 1, 28, 28)


def sources(graph):
    return [g.sources for g in graph.groups if g.prunable]


def test_conv_bn_act_chain_is_one_group_read_by_the_next_conv():
    graph = build_dependency_graph(models.build("vgg_small"), X28)
    group = graph.group_of("features.0.0")
    assert group.sources == ["features.0.0"]
    assert group.norms == ["features.0.1"]
    assert group.consumers == ["features.1.0"]
    assert group.size == 32 and group.prunable
    # channel i of the conv is input i of the next conv
    layer = graph.layers["features.1.0"]
    assert torch.equal(layer.in_group, torch.full((32,), group.index))
    assert torch.equal(layer.in_channel, torch.arange(32))


def test_residual_add_ties_every_summed_conv():
    graph = build_dependency_graph(models.build("resnet8"), X28)
    assert sources(graph) == [
        ["conv1", "layer1.0.conv2"],
        ["layer1.0.conv1"],
        ["layer2.0.conv1"],
        ["layer2.0.conv2", "layer2.0.shortcut.0"],
        ["layer3.0.conv1"],
        ["layer3.0.conv2", "layer3.0.shortcut.0"],
    ]
    assert graph.group_of("layer1.0.conv2").norms == ["bn1", "layer1.0.bn2"]


def test_darknet_stage_is_one_group_of_its_down_conv_and_unit_outputs():
    graph = build_dependency_graph(models.build("darknet_tiny"), X28)
    assert graph.group_of("stages.1.down.0").sources == [
        "stages.1.down.0",
        "stages.1.unit0.conv2.0",
        "stages.1.unit1.conv2.0",
    ]
    assert graph.group_of("stages.1.unit0.conv1.0").sources == [
        "stages.1.unit0.conv1.0"
    ]
    assert len(sources(graph)) == 9


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 1)
        self.b = nn.Conv2d(1, 5, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1)).mean((2, 3))


def test_concatenation_offsets_the_second_tensor_channels():
    graph = build_dependency_graph(_Concat(), torch.zeros(1, 1, 4, 4))
    ga, gb = graph.group_of("a").index, graph.group_of("b").index
    layer = graph.layers["c"]
    assert layer.in_group.tolist() == [ga, ga, ga, gb, gb, gb, gb, gb]
    assert layer.in_channel.tolist() == [0, 1, 2, 0, 1, 2, 3, 4]


def test_flatten_gives_each_channel_its_hw_consecutive_features():
    graph = build_dependency_graph(models.build("lenet5"), X28)
    fc1 = graph.layers["fc1"]  # reads 16 channels x 5 x 5
    assert fc1.in_channel[:27].tolist() == [0] * 25 + [1, 1]
    assert fc1.in_channel[-1].item() == 15
    assert (fc1.in_group == graph.group_of("conv2").index).all()


class _Inverted(nn.Module):
    """MobileNetV2-style: expand 1x1, depthwise 3x3, project 1x1."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(2, 6, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.project = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = torch.relu(self.bn2(self.dw(torch.relu(self.bn1(self.expand(x))))))
        return x + self.project(y)


def test_depthwise_conv_shares_its_input_channels():
    graph = build_dependency_graph(_Inverted(), torch.zeros(1, 2, 4, 4))
    group = graph.group_of("expand")
    assert group.channelwise == ["dw"]
    assert group.norms == ["bn1", "bn2"]
    assert group.consumers == ["project"]
    assert (
        graph.layers["dw"].in_group is None
    )  # one weight dim: in and out channels at once


def test_model_input_and_output_are_fixed():
    graph = build_dependency_graph(_Inverted(), torch.zeros(1, 2, 4, 4))
    # project's channels are added to the input and reach the output
    group = graph.group_of("project")
    assert not group.prunable
    assert "model input" in group.reason and "model output" in group.reason
    graph = build_dependency_graph(models.build("resnet8"), X28)
    assert graph.group_of("fc").reason == "it reaches the model output"


class _Gates(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gate = nn.Conv2d(4, 4, 1)
        self.spatial = nn.Conv2d(4, 1, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x) * 2.0 + 1.0  # scalars pass through
        y = y * torch.sigmoid(
            self.gate(y.mean((2, 3), keepdim=True))
        )  # (B, 4, 1, 1) couples
        y = y * torch.sigmoid(self.spatial(y))  # (B, 1, H, W) broadcasts: no coupling
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_products_couple_channels_unless_broadcast():
    graph = build_dependency_graph(_Gates(), torch.zeros(1, 1, 6, 6))
    assert graph.group_of("conv").sources == ["conv", "gate"]
    assert graph.group_of("spatial").sources == ["spatial"]


@pytest.mark.parametrize(
    "builder, prunable",
    [
        (lambda: torchvision.models.resnet18(weights=None), 12),
        (lambda: torchvision.models.mobilenet_v2(weights=None), 25),
    ],
)
def test_torchvision_models_give_their_groups(builder, prunable):
    graph = build_dependency_graph(builder(), torch.zeros(1, 3, 32, 32))
    assert sum(g.prunable for g in graph.groups) == prunable


def test_graph_building_leaves_the_model_untouched():
    model = models.build("resnet8").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_dependency_graph(model, torch.randn(4, 1, 28, 28))
    assert model.training and model.layer1[0].bn1.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.inner = _DataDependent()

    def forward(self, x):
        return self.inner(self.conv(x))


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value: fx cannot trace it
            return x
        return -x


def test_untraceable_model_error_names_the_module_and_node():
    with pytest.raises(ValueError, match=r"inside module 'inner', after node 'gt'"):
        build_dependency_graph(_Branchy(), torch.zeros(1, 1, 2, 2))


class _Fn(nn.Module):
    def __init__(self, fn, module=None, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 1)
        self.module = module if module is not None else nn.Identity()
        self.fn = fn

    def forward(self, x):
        return self.fn(self.module(self.conv(x)))


@pytest.mark.parametrize(
    "model, match",
    [
        (_Fn(lambda y: y.transpose(0, 1)), r"node 'transpose'.*moves the batch dim"),
        (_Fn(lambda y: y, nn.GroupNorm(2, 4)), r"node 'module'.*GroupNorm"),
        (
            _Fn(lambda y: y, nn.ConvTranspose2d(4, 4, 1)),
            r"node 'module'.*module of type ConvTranspose2d",
        ),
        (_Fn(lambda y: y.sum(1)), r"node 'sum\w*'.*touches the channels"),
        (_Fn(lambda y: torch.softmax(y, 1)), r"node 'softmax'.*function softmax"),
    ],
)
def test_an_unknown_op_is_an_error_naming_the_node(model, match):
    with pytest.raises(ValueError, match=match):
        build_dependency_graph(model, torch.zeros(1, 1, 4, 4))


def test_a_layer_called_twice_is_an_error():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(ValueError, match="'conv' is called more than once"):
        build_dependency_graph(Shared(), torch.zeros(1, 2, 2, 2))


def test_bad_arguments_are_type_errors():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        build_dependency_graph("resnet", X28)
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        build_dependency_graph(models.build("lenet5"), [1, 2])
    with pytest.raises(ValueError, match="did not run on example_input of shape"):
        build_dependency_graph(models.build("lenet5"), torch.zeros(1, 3, 28, 28))


def test_a_reshape_to_a_fixed_size_fixes_the_channels_it_holds():
    graph = build_dependency_graph(
        _Fn(lambda y: y.view(-1, 64)), torch.zeros(1, 1, 4, 4)
    )
    group = graph.group_of("conv")
    assert not group.prunable
    assert "node 'view' reshapes them to the fixed size (64,)" in group.reason


def test_the_printed_graph_lists_as_many_groups_as_its_header_counts():
    graph = build_dependency_graph(models.build("resnet8"), torch.zeros(1, 1, 28, 28))
    header, *rows = repr(graph).splitlines()
    assert header.startswith(f"DependencyGraph: {len(graph.groups)} groups")
    assert len(rows) == len(graph.groups)
    assert (
        rows[-1].strip()
        == "ChannelGroup(7, 1 channels, sources=[], fixed: it is the model input)"
    )
