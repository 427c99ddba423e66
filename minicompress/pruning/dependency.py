"""Which channels of a network must be pruned together, read from its torch.fx graph.

Removing output channel i of a convolution is never a local edit: the BatchNorm after it, the
activation, and every layer that reads the tensor must lose channel i too, and a residual add
ties channel i of every tensor it sums. `channel_flow` follows every channel through the
graph, one rule per role of `channel_roles` and one per layer kind of `layer_kinds`; this file
reads the result: the merged atoms are the channels, and the channels that share producing
layers form a `ChannelGroup`, the unit structured pruning shrinks.

    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, arXiv:2301.12900
    (the grouping of coupled parameters; DepGraph reads the autograd graph, we read torch.fx).

Entry points: `build_dependency_graph(model, example_input) -> DependencyGraph`,
`check_graph(model, graph)`, `graph_of_copy(graph, model, example_input)`.
"""

import torch
from torch import fx

from .. import _checks
from .channel_flow import ChannelFlow
from .channel_groups import ChannelGroup, Layer, collect_groups
from .channel_roles import propagate_shapes, trace

__all__ = [
    "build_dependency_graph",
    "DependencyGraph",
    "ChannelGroup",
    "Layer",
    "check_graph",
    "require_graph",
    "group_starts",
    "graph_of_copy",
]


class DependencyGraph:
    """The coupled channel groups of a model, built by `build_dependency_graph`.

    Attributes:
        graph_module: the fx trace (its submodules are the model's own, not copies).
        groups: list of `ChannelGroup`, indexed by `ChannelGroup.index`.
        layers: {module name: `Layer`} for every layer of a kind in `layer_kinds.KINDS`.
        parameters: {attribute path: (dim, group ids, channel ids)} for every stored tensor
            cut along `dim` with the channels it meets.
        shapes: {node name: output shape} of every tensor-valued node on `example_input`.
        roles: {node name: role}, the roles of `channel_roles.node_role`.
    """

    def __init__(
        self, graph_module, groups, layers, parameters, shapes, roles, located
    ):
        self.graph_module, self.groups, self.layers = graph_module, groups, layers
        self.parameters, self.shapes, self.roles = parameters, shapes, roles
        self._located = located

    def group_of(self, layer):
        """The group of `layer`'s output channels (a layer of `layers`)."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer!r} is not a layer of the graph; layers: {list(self.layers)[:12]}"
            )
        groups = self.layers[layer].out_group.unique()
        if len(groups) != 1:
            raise ValueError(
                f"the channels of {layer!r} belong to several groups {groups.tolist()}"
            )
        return self.groups[int(groups[0])]

    def node_channels(self, node):
        """(group ids, channel ids) of each channel of node `node`'s output along the dim that
        carries them, two (C,) int64 tensors; None when no channel group reaches the node."""
        return self._located(node)

    def __repr__(self):
        prunable = sum(g.prunable for g in self.groups)
        lines = [
            f"DependencyGraph: {len(self.groups)} groups ({prunable} prunable), {len(self.layers)} layers"
        ]
        lines += [f"  {g!r}" for g in self.groups]  # every group counted above, inputs too
        return "\n".join(lines)


def build_dependency_graph(model, example_input):
    """Trace `model` with torch.fx and return its coupled channel groups.

    The model is traced and run once on `example_input` in eval mode under `torch.no_grad()`
    to read every tensor's shape (BatchNorm statistics are not touched, no random number is
    drawn); its training flags are restored.

    Args:
        model: an `nn.Module` that `torch.fx.symbolic_trace` can trace, built from the layer
            kinds of `layer_kinds` and the ops of `channel_roles`.
        example_input: a tensor of the shape the model takes, e.g. (1, 3, 32, 32).

    Returns:
        A `DependencyGraph`.

    Raises:
        TypeError: `model` is not an nn.Module or `example_input` not a tensor.
        ValueError: the model cannot be traced (the message names the module and the last
            node traced), or a node does something this graph cannot follow (the message names
            the node and its operation).

    Example:
        >>> graph = build_dependency_graph(models.build("resnet8"), torch.zeros(1, 1, 28, 28))
        >>> graph.group_of("layer1.0.conv2").sources      # a residual add ties them
        ['conv1', 'layer1.0.conv2']
    """
    _checks.check_module(model)
    _checks.check_tensor(example_input, "example_input")
    flags = {m: m.training for m in model.modules()}
    model.eval()  # a trace records the training flag of dropout and stochastic depth
    try:
        graph_module = trace(model)
    finally:
        for module, flag in flags.items():
            module.train(flag)
    return _graph(graph_module, propagate_shapes(graph_module, example_input))


def graph_of_copy(graph, model, example_input):
    """The dependency graph of `model`, a copy of the model `graph` describes with fewer
    channels or units (the same forward code), built from `graph`'s trace without tracing again."""
    graph_module = fx.GraphModule(model, graph.graph_module.graph, type(model).__name__)
    return _graph(graph_module, propagate_shapes(graph_module, example_input))


def check_graph(model, graph):
    """`graph` is a `DependencyGraph` built from `model` itself (not from a copy of it).

    Raises:
        TypeError: `model` is not an nn.Module, or `graph` not a DependencyGraph.
        ValueError: `graph` was built from another model.
    """
    require_graph(graph)
    _checks.check_module(model)
    modules = dict(model.named_modules())
    for layer in graph.layers.values():
        mine, traced = (
            modules.get(layer.name),
            graph.graph_module.get_submodule(layer.name),
        )
        # a LayerNorm called as a function is traced as its stored weight, not its module
        same_weight = (
            getattr(traced, "weight", None) is not None
            and getattr(mine, "weight", None) is traced.weight
        )
        if mine is not traced and not same_weight:
            raise ValueError(
                f"graph does not describe this model (its layer {layer.name!r} is another "
                "object); build the graph from the model you prune"
            )


def group_starts(graph):
    """Offset of each group's first channel in the concatenation of all groups' masks."""
    require_graph(graph)
    sizes = torch.tensor([0] + [g.size for g in graph.groups])
    return sizes.cumsum(0)


def require_graph(graph):
    """`graph` is a `DependencyGraph` (for functions that take no model)."""
    if not isinstance(graph, DependencyGraph):
        raise TypeError(
            "graph must be a DependencyGraph from build_dependency_graph(model, example_input), "
            f"got {type(graph).__name__}"
        )


# ---------------------------------------------------------------------------------------------


def _graph(graph_module, shapes):
    flow = ChannelFlow(graph_module, shapes).run()
    groups, layers, parameters, located = collect_groups(flow)
    return DependencyGraph(
        graph_module, groups, layers, parameters, shapes, flow.roles, located
    )
