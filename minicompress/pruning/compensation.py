"""Activation-offset compensation: fold the constant that removed channels (or removed
residual blocks) contributed into the next layer, so removing them changes nothing.

    Ye et al., "Rethinking the Smaller-Norm-Less-Informative Assumption in Channel Pruning of
    Convolution Layers", ICLR 2018, arXiv:1802.00124; the trick the YOLO pruning repositories use.

A channel whose BatchNorm scale is gamma_c = 0 outputs the same value a_c = act(beta_c) at every
position. A following conv with weight W (C_out, C_in, kH, kW) adds to output o the constant

    shift_o = sum_c a_c * sum_{kh, kw} W[o, c, kh, kw]

so the channel can be removed exactly if shift is added to that conv's bias (or subtracted from
the running mean of the BatchNorm right after it). Exact except where zero padding reaches the
border: there some of the kH x kW taps read zeros instead of a_c. A 1x1 conv, a conv without
padding, or a Linear after global pooling is exact everywhere.

    channel_constants(graph)                 a_c for every tensor of the graph
    removal_folds(graph, flat_keep)          folds for the channels a keep mask removes
    fold_offsets(graph, offsets, skip=())    folds that re-add a constant downstream of a node
    apply_folds(model, folds)                writes folds into biases / running means
"""

import math
import operator

import torch
from torch import fx, nn

from .graph_ops import LINEAR_ROLES

__all__ = ["channel_constants", "removal_folds", "fold_offsets", "apply_folds"]

_ARITHMETIC = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


def channel_constants(graph):
    """The value each channel of each tensor takes when removed channels are replaced by their
    offset: {node name: (C,) tensor}.

    Rules: a conv/linear outputs its bias (its weights are what pruning zeroes); a BatchNorm
    outputs beta (the normalized value of a channel with gamma = 0 no longer matters); a
    depthwise conv maps a to a * sum(w) + b; activations apply to the value; pooling,
    resampling and dropout keep it; add/sub/mul/div combine values. A value that is not
    constant (a channel multiplied by a non-constant map) is NaN.
    """
    nodes = list(graph.graph_module.graph.nodes)
    values = {}
    for node in nodes:
        role, shape = graph.roles[node.name], graph.shapes.get(node.name)
        if role in ("constant", "size", "output"):
            continue
        if role == "input":
            values[node.name] = torch.zeros(shape[1])
            continue
        x = node.args[0]
        if role in ("conv", "linear", "norm", "depthwise"):
            module = graph.graph_module.get_submodule(node.target)
            channels = shape[1]
            bias = (
                module.bias.detach()
                if module.bias is not None
                else torch.zeros(channels)
            )
            if role == "depthwise":
                bias = values[x.name] * module.weight.detach().flatten(1).sum(1) + bias
            values[node.name] = bias.clone()
        elif role == "pointwise":
            value = values[x.name].view(1, -1, *[1] * (len(shape) - 2))
            values[node.name] = _call(graph.graph_module, node, value).flatten()
        elif role in ("spatial", "mean", "amax"):
            values[node.name] = values[x.name]
        elif role == "sum":
            values[node.name] = values[x.name] * _reduced_count(graph, node)
        elif role == "flatten":
            values[node.name] = values[x.name].repeat_interleave(_spatial(graph, x))
        elif role in _ARITHMETIC:
            a, b = (_operand(values, graph, arg, shape[1]) for arg in node.args[:2])
            values[node.name] = _ARITHMETIC[role](a, b).expand(shape[1]).clone()
        elif role in ("cat", "merge"):
            parts = [values[t.name] for t in node.args[0]]
            if role == "cat":
                values[node.name] = torch.cat(parts)
            else:  # the same channel from several tensors: constant only if they agree
                same = torch.stack(parts).eq(parts[0]).all(0)
                values[node.name] = torch.where(same, parts[0], math.nan)
    return values


def removal_folds(graph, flat_keep):
    """Folds for `surgery.remove_channels(compensate=True)`: each conv/linear that reads removed
    channels absorbs W[:, removed] summed over the kernel, times their constant value.

    Args:
        graph: the `DependencyGraph`.
        flat_keep: bool mask over all groups' channels, concatenated in group order.
    """
    values = channel_constants(graph)
    starts = torch.tensor([0] + [g.size for g in graph.groups]).cumsum(0)
    nodes = {n.name: n for n in graph.graph_module.graph.nodes}
    folds = {}
    for layer in graph.layers.values():
        if layer.kind not in ("conv", "linear"):
            continue
        removed = ~flat_keep[starts[layer.in_group] + layer.in_channel]
        if not removed.any():
            continue
        value = values[nodes[layer.node].args[0].name]  # (C_in,)
        if not torch.isfinite(value[removed]).all():
            raise ValueError(
                f"the removed input channels of {layer.name!r} are not constant (a product "
                "with a non-constant tensor), so their contribution cannot be folded; use "
                "compensate=False"
            )
        weight = graph.graph_module.get_submodule(layer.name).weight.detach()
        weight = (
            weight.flatten(2).sum(2) if weight.dim() > 2 else weight
        )  # (C_out, C_in)
        _fold(graph, layer, weight[:, removed] @ value[removed].to(weight), folds)
    return folds


def fold_offsets(graph, offsets, skip=()):
    """Folds that add `offsets[node]`, a (C,) per-channel constant, to the output of `node` as
    seen by every layer downstream.

    The offset travels through the linear roles (`graph_ops.LINEAR_ROLES`: pooling, flatten,
    adds, concatenation, ...), is summed where tensors add up, and stops at the first conv,
    linear or BatchNorm, whose bias (or running mean) absorbs it. Nodes in `skip` are being
    deleted and carry nothing.

    Returns:
        {(module name, "bias" | "running_mean"): tensor to add}, for `apply_folds`.

    Raises:
        ValueError: a nonzero offset reaches a nonlinear node (an activation after an add), a
            multiplication by a tensor, or the model output: no layer can absorb it there.
    """
    carried, folds = {}, {}
    for node in graph.graph_module.graph.nodes:
        if node.name in skip:
            continue
        role = graph.roles[node.name]
        inputs = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if role in ("cat", "merge"):
            inputs = list(node.args[0])
        incoming = {a.name: carried.get(a.name) for a in inputs}
        offset = None
        if role in ("conv", "linear", "depthwise", "norm"):
            if incoming.get(node.args[0].name) is not None:
                _absorb(graph, node, incoming[node.args[0].name], folds)
        elif role in LINEAR_ROLES or role in ("mul", "div"):
            offset = _carry(graph, node, role, incoming)
        elif any(v is not None for v in incoming.values()):
            raise ValueError(
                f"a constant offset reaches node {node.name!r} ({role}), which is not linear "
                "in its input; it cannot be folded into a layer (use compensate=False)"
            )
        if node.name in offsets:
            start = offsets[node.name].detach()
            offset = start if offset is None else offset + start
        if offset is not None:
            carried[node.name] = offset
    return folds


def apply_folds(model, folds):
    """Add each fold of `fold_offsets` / `remove_channels` to `model` in place.

    ("name", "bias") adds to the layer's bias, creating it when the layer has none;
    ("name", "running_mean") adds to a BatchNorm's running mean.
    """
    with torch.no_grad():
        for (name, attribute), delta in folds.items():
            module = model.get_submodule(name)
            current = getattr(module, attribute)
            if current is None:  # a conv without bias gets one to hold the offset
                module.bias = nn.Parameter(delta.clone().to(module.weight))
            else:
                current.add_(delta.to(current))


# ---------------------------------------------------------------------------------------------


def _absorb(graph, node, offset, folds):
    """Layer `node` reads x + offset: fold what that adds to its output."""
    layer = graph.layers[node.target]
    module = graph.graph_module.get_submodule(node.target)
    if layer.kind == "norm":  # BN(x + o) = BN'(x) with running_mean' = running_mean - o
        if module.running_mean is None:
            raise ValueError(
                f"BatchNorm {node.target!r} keeps no running mean to absorb an offset"
            )
        _add(folds, (layer.name, "running_mean"), -offset)
        return
    weight = module.weight.detach()
    if layer.kind == "depthwise":
        shift = offset * weight.flatten(1).sum(1)
    else:
        weight = (
            weight.flatten(2).sum(2) if weight.dim() > 2 else weight
        )  # (C_out, C_in)
        shift = weight @ offset.to(weight)
    _fold(graph, layer, shift, folds)


def _fold(graph, layer, shift, folds):
    """Make `layer`'s output larger by `shift` (C_out,): bias, else the BN right after, else a new bias."""
    module = graph.graph_module.get_submodule(layer.name)
    norm = graph.graph_module.get_submodule(layer.norm) if layer.norm else None
    if module.bias is None and norm is not None and norm.running_mean is not None:
        _add(
            folds, (layer.norm, "running_mean"), -shift
        )  # BN(y + s) with mean m = BN(y) with m - s
    else:
        _add(folds, (layer.name, "bias"), shift)


def _add(folds, key, delta):
    folds[key] = folds[key] + delta if key in folds else delta.clone()


def _carry(graph, node, role, incoming):
    """The offset a linear node passes on, from the offsets its inputs carry (None = none)."""
    if all(v is None for v in incoming.values()):
        return None
    channels = graph.shapes[node.name][1]

    def offset_of(
        arg, size=channels
    ):  # what an operand carries: (size,), zero for a number
        if isinstance(arg, fx.Node) and incoming.get(arg.name) is not None:
            if len(incoming[arg.name]) != size:
                raise ValueError(
                    f"an offset reaches a broadcast operand of node {node.name!r}"
                )
            return incoming[arg.name]
        return torch.zeros(size)

    x = node.args[0]
    if role in ("spatial", "mean", "amax"):  # max(x + o) = max(x) + o, mean likewise
        return offset_of(x)
    if role == "sum":
        return offset_of(x) * _reduced_count(graph, node)
    if role == "flatten":
        return offset_of(x, graph.shapes[x.name][1]).repeat_interleave(
            _spatial(graph, x)
        )
    if role in ("cat", "merge"):
        parts = [offset_of(t, graph.shapes[t.name][1]) for t in node.args[0]]
        if role == "cat":
            return torch.cat(parts)
        if not all(torch.equal(p, parts[0]) for p in parts):
            raise ValueError(
                f"tensors merged at node {node.name!r} carry different offsets"
            )
        return parts[0]
    a, b = node.args[:2]
    if role in ("add", "sub"):
        return (
            offset_of(a) + offset_of(b)
            if role == "add"
            else offset_of(a) - offset_of(b)
        )
    # mul, div: linear in the offset only when the other operand is a Python number.
    if isinstance(a, fx.Node) and not isinstance(b, fx.Node):
        return offset_of(a) * b if role == "mul" else offset_of(a) / b
    if role == "mul" and isinstance(b, fx.Node) and not isinstance(a, fx.Node):
        return offset_of(b) * a
    raise ValueError(
        f"a constant offset reaches node {node.name!r} ({role} with a tensor), which is not "
        "linear in it; it cannot be folded into a layer (use compensate=False)"
    )


def _operand(values, graph, arg, channels):
    """The per-channel constant of one operand of an add/sub/mul/div: a number, the (C,)
    values of a tensor with all C channels, or NaN for a tensor broadcast along channels (it
    belongs to other channels, whose values are not constant)."""
    if not isinstance(arg, fx.Node):
        return torch.tensor(float(arg))
    if arg.name in values and graph.shapes[arg.name][1] == channels:
        return values[arg.name]
    return torch.tensor(math.nan)


def _call(graph_module, node, value):
    if node.op == "call_module":
        return graph_module.get_submodule(node.target)(value)
    if node.op == "call_method":
        return getattr(value, node.target)(*node.args[1:], **node.kwargs)
    return node.target(value, *node.args[1:], **node.kwargs)


def _spatial(graph, x):
    return math.prod(graph.shapes[x.name][2:])


def _reduced_count(graph, node):
    x = node.args[0]
    return math.prod(graph.shapes[x.name]) // math.prod(graph.shapes[node.name])
