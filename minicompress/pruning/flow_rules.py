"""How channels flow through each role of `channel_roles`: one small function per role.

Each rule receives the `ChannelFlow` (its atom maps, `union`, `new`, `fix`) and a node, and
returns the node's atom map: which channel each element of its output belongs to. A rule
ties the atoms its op couples and fixes the ones it cannot follow, with the reason.

    input, output   fixed: the image channels and the classes are never pruned
    parameter       a stored tensor: atoms of its own, tied to the channels it meets
    layer           the kind's `couple` in `layer_kinds`: conv, grouped, depthwise, linear, norms
    pointwise, spatial   the same channels; pooling ties a channel's positions
    add/sub/mul/div channel c of both operands, unless one is broadcast across channels
    opaque          fixes what goes in; fresh, fixed channels come out
    cat, reshape, permute, getitem, split, mean/amax/sum    see `shape_rules`

`RULES` maps each role to its function; a new op is a line in `channel_roles` and, when it
needs one, a rule here.
"""

import numpy as np
from torch import fx

from . import shape_rules
from .channel_roles import is_node, unknown
from .layer_kinds import KINDS

__all__ = ["RULES"]


def _input(flow, node):
    shape = flow.shapes[node.name]
    channels = flow.new(shape[1] if len(shape) > 1 else 1, "it is the model input")
    return flow.place(channels, len(shape), min(1, len(shape) - 1))


def _parameter(flow, node):
    flow.parameters[node.target] = node.name
    owner, _, name = node.target.rpartition(".")
    return tuple(
        getattr(flow.gm.get_submodule(owner), name).shape
    )  # atoms made when used


def _no_channels(flow, node):
    return None


def _output(flow, node):
    for arg in _inputs(node.args):
        for atoms in _maps(flow.get(arg)):
            flow.fix(atoms, "it reaches the model output")


def _layer(flow, node):
    kind, name = KINDS[flow.roles[node.name]], flow.name_of(node)
    if name in flow.layers:
        raise ValueError(
            f"module {name!r} is called more than once (node {node.name!r}); a layer "
            "shared between two places cannot lose channels in one of them only"
        )
    in_shape, out_shape = flow.shapes[node.args[0].name], flow.shapes[node.name]
    atoms = flow.get(node.args[0])
    vector = flow.channels(atoms, in_shape, kind.channel_dim % len(in_shape))
    rows, cols = kind.couple(flow.module_of(node), vector, flow.union, flow.new)
    flow.layers[name] = (flow.roles[node.name], node.name, rows, cols)
    return flow.place(rows, len(out_shape), kind.channel_dim % len(out_shape))


def _pointwise(flow, node):
    atoms, in_shape = flow.get(node.args[0]), flow.shapes[node.args[0].name]
    out_shape = flow.shapes[node.name]
    if len(in_shape) != len(out_shape):
        unknown(node, "it changes the number of dims")
    for dim, (a, b) in enumerate(zip(in_shape, out_shape)):
        if (
            a != b and atoms.shape[dim] > 1
        ):  # pooling mixes positions: one channel there
            atoms = flow.tie_along(atoms, dim).take([0], axis=dim)
    return flow.compress(atoms)


def _binary(flow, node):
    shape, out = flow.shapes[node.name], None
    operands = [a for a in node.args[:2] if is_node(a) and flow.get(a) is not None]
    maps = [
        (flow.get(a), flow.shapes.get(a.name) or flow.get(a).shape) for a in operands
    ]
    rank = len(shape)
    for atoms, own in maps:
        others = [m for m, _ in maps if m is not atoms]
        spread = any(  # broadcast along a dim where the other's channels differ
            _along(own, d, rank) == 1 < shape[d] and _along(o.shape, d, rank) > 1
            for o in others
            for d in range(rank)
        )
        if spread:
            continue  # each channel meets the same value: nothing to tie
        if out is None:
            out = atoms
        else:
            grid = np.broadcast_shapes(out.shape, atoms.shape)
            flow.union(np.broadcast_to(out, grid), np.broadcast_to(atoms, grid))
            out = np.broadcast_to(out, grid)
    if out is None:
        return flow.place(flow.new(shape[1], "it is a constant"), rank, 1)
    return flow.compress(np.array(out).reshape((1,) * (rank - out.ndim) + out.shape))


def _opaque(flow, node):
    reason = f"node {node.name!r} ({getattr(node.target, '__name__', node.target)}) is not followed inside"
    for arg in _inputs((node.args, node.kwargs)):
        if not isinstance(
            flow.atoms.get(arg.name), tuple
        ):  # a stored tensor stays as it is
            for atoms in _maps(flow.get(arg)):
                flow.fix(atoms, reason)
    shapes = flow.shapes[node.name]
    reason = f"it comes out of node {node.name!r}, which is not followed inside"
    outputs = [
        None if s is None else flow.place(flow.new(s[-1], reason), len(s), len(s) - 1)
        for s in (shapes if isinstance(shapes, list) else [shapes])
    ]
    return outputs if isinstance(shapes, list) else outputs[0]


RULES = {
    "input": _input,
    "parameter": _parameter,
    "size": _no_channels,
    "output": _output,
    "layer": _layer,
    "pointwise": _pointwise,
    "spatial": _pointwise,
    "add": _binary,
    "sub": _binary,
    "mul": _binary,
    "div": _binary,
    "opaque": _opaque,
    "cat": shape_rules.cat,
    "reshape": shape_rules.reshape,
    "permute": shape_rules.permute,
    "getitem": shape_rules.getitem,
    "split": shape_rules.split,
    "mean": shape_rules.reduce,
    "amax": shape_rules.reduce,
    "sum": shape_rules.reduce,
}


# ---------------------------------------------------------------------------------------------


def _inputs(args):
    found = []
    fx.node.map_arg(args, found.append)
    return found


def _maps(value):
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def _along(shape, dim, rank):
    """Size of `shape` along dim `dim` of a result of rank `rank` (broadcasting aligns right)."""
    at = dim - (rank - len(shape))
    return shape[at] if at >= 0 else 1
