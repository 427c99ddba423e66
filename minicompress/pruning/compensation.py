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

Both passes run the trace once on one example: the ops between layers run as they are; each
layer kind contributes its rule from `layer_kinds` (`constant` for what a removed channel
outputs, `absorb` for what an offset on its input does to its output).

    channel_constants(graph)                 a_c for every tensor of the graph
    removal_folds(graph, flat_keep)          folds for the channels a keep mask removes
    fold_offsets(graph, offsets, skip=())    folds that re-add a constant downstream of a node
    apply_folds(model, folds)                writes folds into biases / running means
"""

import math

import torch
from torch import fx, nn

from .channel_roles import IDENTITY_IN_EVAL, LINEAR_ROLES
from .layer_kinds import KINDS

__all__ = ["channel_constants", "removal_folds", "fold_offsets", "apply_folds"]


def channel_constants(graph, flat_keep=None):
    """The value each channel of each tensor takes when removed channels are replaced by their
    constant: {node name: (C,) tensor along dim 1}, NaN where a channel is not constant.

    A layer's removed output channels output `layer_kinds.KINDS[kind].constant` (a conv its
    bias, a BatchNorm beta, a depthwise conv a * sum(w) + b); the ops between layers then run
    on those values. `flat_keep` (a bool mask over all groups' channels) says which channels
    are removed; None treats every channel as removed.
    """
    values = _run(graph, _ConstantRule(graph, flat_keep))
    return {
        name: _per_channel(v, 1)
        for name, v in values.items()
        if _tensor(v) and v.dim() > 1
    }


def removal_folds(graph, flat_keep):
    """Folds for `surgery.remove_channels(compensate=True)`: each layer that reads removed
    channels absorbs what their constant values contributed."""
    rule = _ConstantRule(graph, flat_keep)
    values = _run(graph, rule)
    nodes = {n.name: n for n in graph.graph_module.graph.nodes}
    folds = {}
    for layer in graph.layers.values():
        if layer.in_group is None:
            continue
        removed = ~flat_keep[rule.starts[layer.in_group] + layer.in_channel]  # (cols,)
        if not removed.any():
            continue
        reads = nodes[layer.node].args[0].name
        value = _per_channel(values[reads], KINDS[layer.kind].channel_dim)
        removed = removed.repeat(
            len(value) // len(removed)
        )  # a grouped conv's every group
        if not torch.isfinite(value[removed]).all():
            raise ValueError(
                f"the removed input channels of {layer.name!r} are not constant (a product "
                "with a non-constant tensor), so their contribution cannot be folded; use "
                "compensate=False"
            )
        offset = torch.where(removed, value, torch.zeros(()))
        _fold(
            graph,
            layer,
            KINDS[layer.kind].absorb(_module(graph, layer.name), offset),
            folds,
        )
    return folds


def fold_offsets(graph, offsets, skip=()):
    """Folds that add `offsets[node]`, a (C,) per-channel constant along dim 1, to the output
    of `node` as seen by every layer downstream.

    The offset travels through the linear roles (`channel_roles.LINEAR_ROLES`: pooling, adds,
    concatenation, reshapes, ...) and products with constants, and stops at the first layer,
    which absorbs it (a conv's bias, a BatchNorm's running mean). Nodes in `skip` are being
    deleted and carry nothing.

    Returns:
        {(module name, "bias" | "running_mean"): tensor to add}, for `apply_folds`.

    Raises:
        ValueError: a nonzero offset reaches a nonlinear node (an activation after an add, a
            LayerNorm), a product with a non-constant tensor, or the model output.
    """
    folds = {}
    _run(graph, _OffsetRule(graph, offsets, set(skip), folds))
    return folds


def apply_folds(model, folds):
    """Add each fold of `fold_offsets` / `removal_folds` to `model` in place.

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


class _ConstantRule:
    """Layers output the constant of their removed rows (NaN for kept ones); ops run as is."""

    def __init__(self, graph, flat_keep):
        self.graph, self.flat_keep = graph, flat_keep
        self.starts = torch.tensor([0] + [g.size for g in graph.groups]).cumsum(0)

    def layer(self, layer, x, shape):
        kind = KINDS[layer.kind]
        rows = kind.constant(
            _module(self.graph, layer.name), _per_channel(x, kind.channel_dim)
        )
        if self.flat_keep is not None:
            kept = self.flat_keep[self.starts[layer.out_group] + layer.out_channel]
            rows = torch.where(kept, torch.full_like(rows, math.nan), rows)
        return _placed(rows, shape, kind.channel_dim)

    def op(self, node, role, env):
        return _call(self.graph.graph_module, node, env)


class _OffsetRule:
    """Values are offsets: ops linear in their input carry them (constants add nothing to an
    offset but may scale it), layers absorb them, and a nonzero offset anywhere else is an
    error."""

    def __init__(self, graph, offsets, skip, folds):
        self.graph, self.offsets, self.skip, self.folds = graph, offsets, skip, folds
        self.constant = set()  # nodes computed from stored tensors and sizes only

    def layer(self, layer, x, shape):
        if _carries(x):
            vector = _per_channel(x, KINDS[layer.kind].channel_dim)
            shift = KINDS[layer.kind].absorb(_module(self.graph, layer.name), vector)
            _fold(self.graph, layer, shift, self.folds)
        return torch.zeros(shape)

    def op(self, node, role, env):
        inputs = _inputs(node)
        data = [
            n
            for n in inputs
            if n.name not in self.constant and self.graph.roles[n.name] != "size"
        ]
        if node.op != "output" and role != "input" and not data:
            self.constant.add(node.name)
            return _call(self.graph.graph_module, node, env)
        moving = [n for n in data if _carries(env[n.name])]
        blocked = (  # where an offset cannot pass: f(x + o) != f(x) + c
            node.op == "output"
            or role not in LINEAR_ROLES + ("mul", "div")
            or (role in ("mul", "div") and len(data) > 1)
            or (role == "div" and node.args[1] in data)
        )
        if moving and blocked and node.name not in self.skip:
            what = (
                "the model output"
                if node.op == "output"
                else f"node {node.name!r} ({role})"
            )
            raise ValueError(
                f"a constant offset reaches {what}, which is not linear in it; it cannot be "
                "folded into a layer (use compensate=False)"
            )
        if node.op == "output":
            return None
        if role in (
            "add",
            "sub",
            "cat",
        ):  # a stored tensor adds to the value, not the offset
            env = {
                n: (torch.zeros_like(v) if n in self.constant else v)
                for n, v in env.items()
            }
        value = _call(self.graph.graph_module, node, env)
        if node.name in self.skip or (blocked and not moving):
            value = _zeros(value)
        if node.name in self.offsets:
            value = value + _placed(self.offsets[node.name].detach(), value.shape, 1)
        return value


def _run(graph, rule):
    """Run the trace on a batch of one, each node through `rule`; {node name: value}."""
    gm, env = graph.graph_module, {}
    layers = {layer.node: layer for layer in graph.layers.values()}
    flags = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            for node in gm.graph.nodes:
                role = graph.roles[node.name]
                if node.op == "placeholder":
                    env[node.name] = torch.zeros((1, *graph.shapes[node.name][1:]))
                elif role in KINDS:
                    shape = (1, *graph.shapes[node.name][1:])
                    env[node.name] = rule.layer(
                        layers[node.name], env[node.args[0].name], shape
                    )
                else:
                    env[node.name] = rule.op(node, role, env)
    finally:
        for module, flag in flags.items():
            module.train(flag)
    return env


def _call(gm, node, env):
    """The node's own operation on the values in `env`."""
    args = fx.node.map_arg(node.args, lambda n: env[n.name])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n.name])
    if node.op == "output":
        return None
    if node.op == "get_attr":
        owner, _, name = node.target.rpartition(".")
        return getattr(gm.get_submodule(owner), name)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.target in IDENTITY_IN_EVAL:  # recorded with the training flag of the trace
        return args[0]
    return node.target(*args, **kwargs)


def _fold(graph, layer, shift, folds):
    """Make `layer`'s output larger by `shift` (rows,): a BatchNorm's running mean (its
    `absorb` gives the change of the mean), else the bias, else the BatchNorm right after a
    layer without bias, else a new bias."""
    module = _module(graph, layer.name)
    norm = _module(graph, layer.norm) if layer.norm else None
    if layer.kind == "norm":
        key = (layer.name, "running_mean")
    elif module.bias is None and norm is not None and norm.running_mean is not None:
        key, shift = (
            (layer.norm, "running_mean"),
            -shift,
        )  # BN(y + s), mean m = BN(y), m - s
    else:
        key = (layer.name, "bias")
    folds[key] = folds[key] + shift if key in folds else shift.clone()


def _per_channel(value, dim):
    """(C,) value of each channel along `dim` of a (1, ...) tensor; NaN where it varies."""
    rows = value.movedim(dim, 0).reshape(value.shape[dim], -1)
    high, low = rows.amax(1), rows.amin(1)
    return torch.where(torch.isclose(high, low, rtol=1e-5, atol=1e-6), high, math.nan)


def _placed(vector, shape, dim):
    view = [1] * len(shape)
    view[dim] = len(vector)
    return vector.reshape(view).expand(*shape).clone()


def _module(graph, name):
    return graph.graph_module.get_submodule(name)


def _inputs(node):
    found = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _carries(value):
    values = value if isinstance(value, (tuple, list)) else [value]
    return any(isinstance(v, torch.Tensor) and bool(v.ne(0).any()) for v in values)


def _zeros(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_zeros(v) for v in value)
    return torch.zeros_like(value) if isinstance(value, torch.Tensor) else value


def _tensor(value):
    return isinstance(value, torch.Tensor)
