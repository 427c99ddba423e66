"""How constants and offsets flow through a traced model, for compensation: the trace runs
once on a batch of one, the ops between layers as they are, each layer through its kind's
rule in `layer_kinds`.

    ConstantRule   values: a layer's removed rows output `constant` (bias, beta, a * sum(w) + b),
                   its kept rows NaN, so a value that depends on a kept channel is NaN
    OffsetRule     offsets: ops linear in their input carry them (a stored tensor adds nothing
                   to an offset but may scale it), layers `absorb` them, anything else that a
                   nonzero offset reaches is an error

Entry point: `run(graph, rule) -> {node name: value}`; `per_channel(value, dim)` reads (C,)
constants off a value.
"""

import math

import torch
from torch import fx

from .channel_roles import IDENTITY_IN_EVAL, LINEAR_ROLES
from .dependency import group_starts
from .layer_kinds import KINDS

__all__ = ["ConstantRule", "OffsetRule", "run", "per_channel", "placed"]


class ConstantRule:
    """Layers output the constant of their removed rows (NaN for kept ones); ops run as is."""

    def __init__(self, graph, flat_keep):
        self.graph, self.flat_keep = graph, flat_keep
        self.starts = group_starts(graph)

    def layer(self, layer, x, shape):
        kind = KINDS[layer.kind]
        rows = kind.constant(
            _module(self.graph, layer.name), per_channel(x, kind.channel_dim)
        )
        if self.flat_keep is not None:
            kept = self.flat_keep[self.starts[layer.out_group] + layer.out_channel]
            rows = torch.where(kept, torch.full_like(rows, math.nan), rows)
        return placed(rows, shape, kind.channel_dim)

    def op(self, node, role, env):
        return _call(self.graph.graph_module, node, env)


class OffsetRule:
    """Values are offsets: ops linear in their input carry them (constants add nothing to an
    offset but may scale it), layers absorb them, and a nonzero offset anywhere else is an
    error."""

    def __init__(self, graph, offsets, skip, fold):
        self.graph, self.offsets, self.skip, self.fold = graph, offsets, skip, fold
        self.constant = set()  # nodes computed from stored tensors and sizes only

    def layer(self, layer, x, shape):
        if _carries(x):
            vector = per_channel(x, KINDS[layer.kind].channel_dim)
            shift = KINDS[layer.kind].absorb(_module(self.graph, layer.name), vector)
            self.fold(layer, shift)
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
            value = value + placed(self.offsets[node.name].detach(), value.shape, 1)
        return value


def run(graph, rule):
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


def per_channel(value, dim):
    """(C,) value of each channel along `dim` of a (1, ...) tensor; NaN where it varies."""
    rows = value.movedim(dim, 0).reshape(value.shape[dim], -1)
    high, low = rows.amax(1), rows.amin(1)
    return torch.where(torch.isclose(high, low, rtol=1e-5, atol=1e-6), high, math.nan)


def placed(vector, shape, dim):
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
