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

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from .. import _checks
from .channel_flow import ChannelFlow
from .channel_roles import propagate_shapes, trace
from .layer_kinds import PRODUCERS

__all__ = [
    "build_dependency_graph",
    "DependencyGraph",
    "ChannelGroup",
    "Layer",
    "check_graph",
    "graph_of_copy",
]


@dataclass
class Layer:
    """One layer with parameters and the group/channel of each slice of it.

    kind: a name from `layer_kinds.KINDS` ("conv", "grouped", "depthwise", "linear", "norm",
        "layernorm").
    out_group, out_channel: (rows,) int64, group and channel of each weight row (dim 0), or of
        each feature of a norm. A grouped conv's row j of every group is one channel.
    in_group, in_channel: (cols,) the same for each weight column (dim 1; after a flatten a
        channel owns H*W consecutive input features); None for depthwise convs and norms.
    node: name of its node in the fx graph. norm: the BatchNorm that directly and solely reads
        this layer's output, if any (where an offset can be folded into running_mean).
    """

    name: str
    kind: str
    node: str
    out_group: torch.Tensor
    out_channel: torch.Tensor
    in_group: torch.Tensor = None
    in_channel: torch.Tensor = None
    norm: str = None


@dataclass
class ChannelGroup:
    """Channels that must be removed together: `size` channels shared by `sources` (the
    layers whose outputs are these channels; several when a residual add ties them), the
    BatchNorms (`norms`), depthwise convs and LayerNorms (`channelwise`) and stored tensors
    (`parameters`, such as ConvNeXt's layer scale) on them, and the layers that read them
    (`consumers`). `prunable` is False when a channel reaches the model output, the model
    input or an op that is not followed; `reason` says which."""

    index: int
    size: int
    sources: list = field(default_factory=list)
    norms: list = field(default_factory=list)
    channelwise: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    parameters: list = field(default_factory=list)
    prunable: bool = True
    reason: str = ""

    def __repr__(self):
        state = "prunable" if self.prunable else f"fixed: {self.reason}"
        return f"ChannelGroup({self.index}, {self.size} channels, sources={self.sources}, {state})"


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
        lines += [f"  {g!r}" for g in self.groups if g.sources]
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
    return _collect(graph_module, propagate_shapes(graph_module, example_input))


def graph_of_copy(graph, model, example_input):
    """The dependency graph of `model`, a copy of the model `graph` describes with fewer
    channels or units (the same forward code), built from `graph`'s trace without tracing again."""
    graph_module = fx.GraphModule(model, graph.graph_module.graph, type(model).__name__)
    return _collect(graph_module, propagate_shapes(graph_module, example_input))


def check_graph(model, graph):
    """`graph` is a `DependencyGraph` built from `model` itself (not from a copy of it).

    Raises:
        TypeError: `model` is not an nn.Module, or `graph` not a DependencyGraph.
        ValueError: `graph` was built from another model.
    """
    _checks.check_module(model)
    if not isinstance(graph, DependencyGraph):
        raise TypeError(
            "graph must be a DependencyGraph from build_dependency_graph(model, example_input), "
            f"got {type(graph).__name__}"
        )
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


# ---------------------------------------------------------------------------------------------


def _collect(graph_module, shapes):
    """Read the groups off the merged atoms of a `ChannelFlow` run."""
    flow = ChannelFlow(graph_module, shapes).run()
    layers = {
        n: (kind, node, flow.find(rows), None if cols is None else flow.find(cols))
        for n, (kind, node, rows, cols) in flow.layers.items()
    }
    # A second union-find, over channels: the channels of one producing layer form a group;
    # channels no layer produces (the input's) form one group per layer that reads them.
    parent = {}

    def top(r):
        while parent.setdefault(r, r) != r:
            r = parent[r]
        return r

    def tie(roots):
        first = top(int(roots[0]))
        for r in roots[1:]:
            other = top(int(r))
            if other != first:
                parent[max(other, first)], first = min(other, first), min(other, first)

    producers = [rows for kind, _, rows, _ in layers.values() if kind in PRODUCERS]
    for rows in producers:
        tie(rows)
    produced = {int(r) for rows in producers for r in rows}
    for _, _, rows, cols in layers.values():
        for roots in (rows, cols):
            if roots is not None and not produced.intersection(roots.tolist()):
                tie(roots)

    groups, where = [], {}  # root -> (group index, channel index)
    group_of_top = {}

    def locate(roots, create=True):
        out = []
        for r in roots.tolist():
            if r not in where:
                if not create:
                    return None
                t = top(r)
                if t not in group_of_top:
                    group_of_top[t] = len(groups)
                    groups.append(ChannelGroup(index=len(groups), size=0))
                group = groups[group_of_top[t]]
                where[r] = (group.index, group.size)
                group.size += 1
            out.append(where[r])
        pairs = torch.tensor(out, dtype=torch.long).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    for (
        rows
    ) in producers:  # producers first: channel i of a one-producer group is its row i
        locate(rows)
    built = {}
    for name, (kind, node, rows, cols) in layers.items():
        og, oc = locate(rows)
        ig, ic = locate(cols) if cols is not None else (None, None)
        built[name] = Layer(name, kind, node, og, oc, ig, ic)
    _members(groups, built)
    parameters = _parameters(flow, groups, locate)
    _fix(flow, groups, where)
    _norms_after(graph_module, built)

    def located(node):
        atoms = flow.atoms.get(node)
        if not isinstance(atoms, np.ndarray) or sum(s > 1 for s in atoms.shape) != 1:
            return None
        return locate(flow.find(atoms.ravel()), create=False)

    return DependencyGraph(
        graph_module, groups, built, parameters, shapes, flow.roles, located
    )


def _members(groups, layers):
    places = {"norm": "norms", "depthwise": "channelwise", "layernorm": "channelwise"}
    for layer in layers.values():
        for g in layer.out_group.unique().tolist():
            getattr(
                groups[g], "sources" if layer.kind in PRODUCERS else places[layer.kind]
            ).append(layer.name)
        if layer.in_group is not None:
            for g in layer.in_group.unique().tolist():
                groups[g].consumers.append(layer.name)
    for group in groups:
        if not group.sources:
            group.prunable, group.reason = False, "no conv or linear layer produces it"


def _parameters(flow, groups, locate):
    """Stored tensors whose elements all sit in channel groups, each along one dim."""
    found = {}
    for target, node in flow.parameters.items():
        atoms = flow.atoms.get(node)
        if not isinstance(atoms, np.ndarray):
            continue  # never met a channel
        roots = flow.find(atoms.ravel()).reshape(atoms.shape)
        dims = [
            d for d in range(roots.ndim) if not (roots == roots.take([0], axis=d)).all()
        ]
        along = (
            np.moveaxis(roots, dims[0], 0).reshape(roots.shape[dims[0]], -1)[:, 0]
            if len(dims) == 1
            else None
        )
        located = locate(along, create=False) if along is not None else None
        if located is None:
            continue
        found[target] = (dims[0], *located)
        for g in located[0].unique().tolist():
            groups[g].parameters.append(target)
    return found


def _fix(flow, groups, where):
    reasons = {}
    for atoms, reason in flow.fixed:
        for r in np.unique(flow.find(atoms)).tolist():
            if r in where:
                reasons.setdefault(where[r][0], set()).add(reason)
    for index, why in reasons.items():
        groups[index].prunable = False
        groups[index].reason = "; ".join(sorted(why))


def _norms_after(graph_module, layers):
    # A BatchNorm that alone reads a layer's output can absorb an offset of that output.
    nodes = {n.name: n for n in graph_module.graph.nodes}
    by_node = {layer.node: layer for layer in layers.values()}
    for layer in layers.values():
        users = list(nodes[layer.node].users)
        reader = by_node.get(users[0].name) if len(users) == 1 else None
        if layer.kind in PRODUCERS and reader is not None and reader.kind == "norm":
            layer.norm = reader.name
