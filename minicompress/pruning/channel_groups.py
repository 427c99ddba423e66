"""Channel groups read off a finished `ChannelFlow`: the merged atoms are the channels, and
the channels that share producing layers form a `ChannelGroup`, the unit structured pruning
shrinks. Each layer becomes a `Layer` record of the group and channel of every weight row and
column, which surgery, the criteria and compensation index with.

Entry point: `collect_groups(flow)`, called by `dependency.build_dependency_graph`.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from .layer_kinds import PRODUCERS

__all__ = ["Layer", "ChannelGroup", "collect_groups"]


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


def collect_groups(flow):
    """Read the groups off the merged atoms of a finished `ChannelFlow`: (groups, {name:
    Layer}, {stored tensor: (dim, group ids, channel ids)}, node -> channels lookup)."""
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

    # Producers first, so that channel i of a group with one producer is its row i.
    for rows in producers:
        locate(rows)
    built = {}
    for name, (kind, node, rows, cols) in layers.items():
        og, oc = locate(rows)
        ig, ic = locate(cols) if cols is not None else (None, None)
        built[name] = Layer(name, kind, node, og, oc, ig, ic)
    _members(groups, built)
    parameters = _parameters(flow, groups, locate)
    _fix(flow, groups, where)
    _norms_after(flow.gm, built)

    def located(node):
        atoms = flow.atoms.get(node)
        if not isinstance(atoms, np.ndarray) or sum(s > 1 for s in atoms.shape) != 1:
            return None
        return locate(flow.find(atoms.ravel()), create=False)

    return groups, built, parameters, located


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
