"""Which channels of a network must be pruned together, read from its torch.fx graph.

Removing output channel i of a convolution is never a local edit: the BatchNorm after it, the
activation, and every layer that reads the tensor must lose channel i too, and a residual add
ties channel i of every tensor it sums. This file traces a model with `torch.fx`, propagates
one "atom" per channel through the graph and merges atoms that an operation couples. The
merged atoms are the channels; the channels that share producing layers form a `ChannelGroup`,
the unit that structured pruning shrinks.

    Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, arXiv:2301.12900
    (the grouping of coupled parameters; DepGraph reads the autograd graph, we read torch.fx).

The coupling rules, one per kind of node:

    conv (groups=1), linear     new channels on the output side; the input side reads its input's
    depthwise conv              groups == in == out channels: output channel c is input channel c
    BatchNorm, activations,     channel c in -> channel c out (the tables in `graph_ops`)
      pooling, dropout, identity
    add / sub / mul / div       of two tensors: channel c of both inputs is one channel; with a
                                scalar or a tensor broadcast along channels: passes through
    cat along dim 1             channels are concatenated (offsets); along another dim: merged
    flatten / view(B, -1)       channel c becomes the H*W consecutive features c*H*W ... (c+1)*H*W-1
    model input, model output,  fixed: never pruned (the classifier's outputs are the classes)
      constant tensors

Anything else is an error naming the node, never silently treated as element-wise.

Entry point: `build_dependency_graph(model, example_input) -> DependencyGraph`.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from .. import _checks
from .graph_ops import node_role, propagate_shapes, trace

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

    kind: "conv" (groups=1), "linear", "depthwise" or "norm" (BatchNorm).
    out_group, out_channel: (n_out,) int64, group and channel of each output channel of a
        conv/linear, of each channel of a depthwise conv or BatchNorm (weight dim 0).
    in_group, in_channel: (n_in,) the same for each input index of a conv/linear (weight dim 1;
        after a flatten a channel owns H*W consecutive input features); None otherwise.
    node: name of its node in the fx graph. norm: the BatchNorm that directly and solely reads
        this conv/linear's output, if any (where an offset can be folded into running_mean).
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
    conv/linear layers whose outputs are these channels; several when a residual add ties them),
    the BatchNorms and depthwise convs on them (`norms`, `channelwise`) and the layers that read
    them (`consumers`). `prunable` is False when a channel reaches the model output, the model
    input or a constant tensor; `reason` says which."""

    index: int
    size: int
    sources: list = field(default_factory=list)
    norms: list = field(default_factory=list)
    channelwise: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
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
        layers: {module name: `Layer`} for every conv, linear and BatchNorm in the graph.
        shapes: {node name: output shape} of every tensor-valued node on `example_input`.
        roles: {node name: role}, the roles of `graph_ops.node_role`.
    """

    def __init__(self, graph_module, groups, layers, node_channels, shapes, roles):
        self.graph_module = graph_module
        self.groups = groups
        self.layers = layers
        self.shapes = shapes
        self.roles = roles
        self._node_channels = node_channels

    def group_of(self, layer):
        """The group of `layer`'s output channels (a conv, linear, depthwise conv or BatchNorm)."""
        if layer not in self.layers:
            raise ValueError(
                f"layer {layer!r} is not a conv, linear or BatchNorm of the graph"
            )
        groups = self.layers[layer].out_group.unique()
        if len(groups) != 1:
            raise ValueError(
                f"the channels of {layer!r} belong to several groups {groups.tolist()}"
            )
        return self.groups[int(groups[0])]

    def node_channels(self, node):
        """(group ids, channel ids) of each channel (or feature) of node `node`'s output, two
        (C,) int64 tensors, or None when the node's value has no channel dimension."""
        return self._node_channels.get(node)

    def __repr__(self):
        prunable = sum(g.prunable for g in self.groups)
        head = f"DependencyGraph: {len(self.groups)} groups ({prunable} prunable)"
        lines = [f"{head}, {len(self.layers)} layers"]
        lines += [f"  {g!r}" for g in self.groups if g.sources]
        return "\n".join(lines)


def build_dependency_graph(model, example_input):
    """Trace `model` with torch.fx and return its coupled channel groups.

    The model runs once on `example_input` in eval mode under `torch.no_grad()` to read every
    tensor's shape (BatchNorm statistics are not touched); its training flags are restored.

    Args:
        model: an `nn.Module` that `torch.fx.symbolic_trace` can trace. Convolutions must be
            plain (groups=1) or depthwise (groups == in == out channels); Linear layers must
            read 2-D (batch, features) inputs.
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
    graph_module = trace(model)
    shapes = propagate_shapes(graph_module, example_input)
    return _Builder(graph_module, shapes).build()


def graph_of_copy(graph, model, example_input):
    """The dependency graph of `model`, a copy of the model `graph` describes with fewer
    channels or units (the same forward code), built from `graph`'s trace without tracing again."""
    graph_module = fx.GraphModule(model, graph.graph_module.graph, type(model).__name__)
    shapes = propagate_shapes(graph_module, example_input)
    return _Builder(graph_module, shapes).build()


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
        if modules.get(layer.name) is not graph.graph_module.get_submodule(layer.name):
            raise ValueError(
                f"graph does not describe this model (its layer {layer.name!r} is another "
                "object); build the graph from the model you prune"
            )


# ---------------------------------------------------------------------------------------------


class _Builder:
    """One pass over the graph: give every tensor's channel dimension a list of atoms, merge
    the atoms that a node couples (union-find), then read the groups off the merged atoms."""

    def __init__(self, graph_module, shapes):
        self.gm, self.shapes = graph_module, shapes
        self.parent = []  # union-find over atoms
        self.fixed = {}  # atom -> the reasons it may not be pruned
        self.atoms = {}  # node name -> np.ndarray of atoms along the channel dim
        self.roles = {}  # node name -> role (graph_ops.node_role)
        self.layers = {}  # module name -> (kind, node, out atoms, in atoms)

    # -- union-find ---------------------------------------------------------------------------
    def new_atoms(self, n, fixed=None):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        atoms = np.arange(start, start + n)
        if fixed:
            for a in atoms.tolist():
                self.fixed.setdefault(a, set()).add(fixed)
        return atoms

    def find(self, a):
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, left, right):
        for a, b in zip(left.tolist(), right.tolist()):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    # -- the walk: one rule per role ----------------------------------------------------------
    def build(self):
        for node in self.gm.graph.nodes:
            role = node_role(self.gm, node, self.shapes)
            self.roles[node.name] = role
            self.atoms[node.name] = self.visit(node, role)
        return self.collect()

    def visit(self, node, role):
        shape = self.shapes.get(node.name)
        if role == "input":
            return self.new_atoms(shape[1], "it is the model input") if shape else None
        if role in ("constant", "size"):
            return None  # a constant gets fixed atoms where it meets a channel tensor
        if role == "output":
            fx.node.map_arg(
                node.args, lambda arg: self.fix(arg, "it reaches the model output")
            )
            return None
        if role in ("conv", "linear", "depthwise", "norm"):
            module = self.gm.get_submodule(node.target)
            if node.target in self.layers:
                raise ValueError(
                    f"module {node.target!r} is called more than once (node {node.name!r}); "
                    "a layer shared between two places cannot lose channels in one of them only"
                )
            source = self.channels_of(node.args[0], node)
            out = source if role in ("depthwise", "norm") else None
            if out is None:
                out = self.new_atoms(
                    module.out_channels if role == "conv" else module.out_features
                )
            reads = source if role in ("conv", "linear") else None  # weight dim 1
            self.layers[node.target] = (role, node.name, out, reads)
            return out
        if role in ("pointwise", "spatial"):
            return self.channels_of(node.args[0], node)
        if role in ("add", "sub", "mul", "div"):
            return self.binary(node, shape)
        if role in ("cat", "merge"):
            tensors = node.args[0] if node.args else node.kwargs["tensors"]
            parts = [self.channels_of(t, node) for t in tensors]
            if role == "cat":
                return np.concatenate(
                    parts
                )  # the channels of each input, one after the other
            for part in parts[1:]:
                self.union(parts[0], part)
            return parts[0]
        if role == "flatten":
            # C-order flattening: channel c becomes features c*HW ... (c+1)*HW - 1.
            in_shape = self.shapes[node.args[0].name]
            return np.repeat(
                self.channels_of(node.args[0], node), int(np.prod(in_shape[2:]))
            )
        if role in ("mean", "amax", "sum"):
            return self.channels_of(node.args[0], node)
        raise AssertionError(
            f"role {role!r} has no rule"
        )  # node_role and this list agree

    def channels_of(self, x, node):
        """Atoms of tensor `x` read by `node` (fresh fixed atoms when `x` is a constant)."""
        if isinstance(x, fx.Node) and self.atoms.get(x.name) is not None:
            return self.atoms[x.name]
        shape = self.shapes.get(x.name) if isinstance(x, fx.Node) else None
        if shape is None or len(shape) < 2:
            raise ValueError(
                f"node {node.name!r} reads {x!r}, which has no channel dimension"
            )
        return self.new_atoms(shape[1], "it comes from a constant tensor")

    def binary(self, node, shape):
        channels, out = shape[1], None
        for operand in node.args[:2]:
            if not isinstance(operand, fx.Node) or operand.name not in self.shapes:
                continue  # a Python number: each channel meets the same value
            other = self.shapes[operand.name]
            axis = 1 - (
                len(shape) - len(other)
            )  # broadcasting aligns shapes on the right
            if (other[axis] if axis >= 0 else 1) == 1 and channels != 1:
                continue  # broadcast along channels: each channel meets the same value
            atoms = self.channels_of(operand, node)
            if out is None:
                out = atoms
            else:
                self.union(out, atoms)  # channel c of both operands is one channel
        return out if out is not None else self.new_atoms(channels, "it is a constant")

    def fix(self, x, reason):
        atoms = self.atoms.get(x.name)
        for a in atoms.tolist() if atoms is not None else ():
            self.fixed.setdefault(a, set()).add(reason)

    # -- read the groups off ------------------------------------------------------------------
    def collect(self):
        roots = np.array(
            [self.find(a) for a in range(len(self.parent))], dtype=np.int64
        )
        # A second union-find over channels: the channels of one producing layer form a group.
        group_parent = {}

        def gfind(r):
            while group_parent.setdefault(r, r) != r:
                r = group_parent[r]
            return r

        def gunion(rs):
            first = gfind(int(rs[0]))
            for r in rs[1:]:
                other = gfind(int(r))
                if other != first:
                    group_parent[max(other, first)] = min(other, first)
                    first = min(other, first)

        sources = [
            (name, out)
            for name, (kind, _, out, _) in self.layers.items()
            if kind in ("conv", "linear")
        ]
        for _, out in sources:
            gunion(roots[out])
        # Tensors no layer produces (the input, constants): each one is a group of its own.
        produced = {int(r) for _, out in sources for r in roots[out]}
        lists = [a for a in self.atoms.values() if a is not None and len(a)]
        lists += [src for *_, src in self.layers.values() if src is not None]
        for atoms in lists:
            if not produced.intersection(roots[atoms].tolist()):
                gunion(roots[atoms])

        group_index, channel_index, groups = {}, {}, []

        def locate(atoms):
            out_g, out_c = [], []
            for r in roots[atoms].tolist():
                if r not in channel_index:
                    g = gfind(r)
                    if g not in group_index:
                        group_index[g] = len(groups)
                        groups.append(ChannelGroup(index=len(groups), size=0))
                    group = groups[group_index[g]]
                    channel_index[r] = (group.index, group.size)
                    group.size += 1
                gi, ci = channel_index[r]
                out_g.append(gi)
                out_c.append(ci)
            return torch.tensor(out_g, dtype=torch.long), torch.tensor(
                out_c, dtype=torch.long
            )

        # Producers first, so that channel i of a group with one producer is its output i.
        for _, out in sources:
            locate(out)
        layers = {}
        for name, (kind, node, out, source) in self.layers.items():
            og, oc = locate(out)
            ig, ic = locate(source) if source is not None else (None, None)
            layers[name] = Layer(name, kind, node, og, oc, ig, ic)
        node_channels = {
            name: locate(atoms)
            for name, atoms in self.atoms.items()
            if atoms is not None
        }

        reasons = {}
        for atom, why in self.fixed.items():
            group = int(locate(np.array([atom]))[0][0])
            reasons.setdefault(group, set()).update(why)
        for group in groups:
            if group.index in reasons:
                group.prunable = False
                group.reason = "; ".join(sorted(reasons[group.index]))
        members = {"conv": "sources", "linear": "sources", "depthwise": "channelwise"}
        for layer in layers.values():
            for g in layer.out_group.unique().tolist():
                getattr(groups[g], members.get(layer.kind, "norms")).append(layer.name)
            if layer.in_group is not None:
                for g in layer.in_group.unique().tolist():
                    groups[g].consumers.append(layer.name)
        for group in groups:
            if group.prunable and not group.sources:
                group.prunable = False
                group.reason = "no conv or linear layer produces it"
        # A BatchNorm that alone reads a layer's output can absorb an offset of that output.
        nodes = {n.name: n for n in self.gm.graph.nodes}
        by_node = {layer.node: layer for layer in layers.values()}
        for layer in layers.values():
            users = list(nodes[layer.node].users)
            reader = by_node.get(users[0].name) if len(users) == 1 else None
            if layer.kind != "norm" and reader is not None and reader.kind == "norm":
                layer.norm = reader.name
        return DependencyGraph(
            self.gm, groups, layers, node_channels, self.shapes, self.roles
        )
