"""The operations structured pruning can follow: tracing a model with torch.fx, the shape of
every tensor in the trace, and the role of each node with respect to channels.

Every node gets exactly one role, or an error that names it. Unknown operations are never
treated as element-wise.

    role         nodes                                              channel c of the output is
    input        the model's input                                  fixed
    constant     get_attr (a tensor stored on the model)            fixed where it meets channels
    output       the model's output                                 fixed
    size         x.shape, x.size(0), ... (not tensors)              -
    conv         Conv{1,2,3}d with groups=1                         a new channel
    depthwise    Conv with groups == in == out channels             input channel c
    linear       Linear on a 2-D input                              a new feature
    norm         BatchNorm{1,2,3}d                                  input channel c
    pointwise    activations (`POINTWISE_*`)                        f(input channel c)
    spatial      pooling, dropout, identity, resampling (`SPATIAL_*`) input channel c, moved in space
    add/sub/mul/div   of two tensors, or a tensor and a scalar      c of both inputs
    cat          torch.cat along dim 1                              the inputs' channels in a row
    merge        torch.cat along a spatial dim                      c of every input
    flatten      flatten(x, 1), x.view(x.size(0), -1)               features c*HW ... (c+1)*HW - 1
    mean/amax/sum  reductions over spatial dims                     input channel c

Entry points: `trace(model)`, `propagate_shapes(graph_module, example_input)`,
`node_role(graph_module, node, shapes)`.
"""

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .. import _checks

__all__ = [
    "trace",
    "propagate_shapes",
    "node_role",
    "POINTWISE_MODULES",
    "POINTWISE_FUNCTIONS",
    "SPATIAL_MODULES",
    "SPATIAL_FUNCTIONS",
    "BINARY_OPS",
    "LINEAR_ROLES",
]

# Element-wise maps f(x) applied to each value: a constant channel stays constant (f(a)), but
# f(x + a) != f(x) + a, which matters when a constant is folded into the next layer.
# fmt: off
POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
POINTWISE_FUNCTIONS = (
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid, F.tanh, torch.relu, torch.sigmoid,
    torch.tanh,
)
# Per-channel maps that move values around but commute with adding a per-channel constant
# (pooling, resampling, identity; dropout is the identity in eval mode).
SPATIAL_MODULES = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)
SPATIAL_FUNCTIONS = (
    F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool2d, F.interpolate,
)
BINARY_OPS = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
}
_POINTWISE_METHODS = ("relu", "relu_", "sigmoid", "tanh")
_SPATIAL_METHODS = ("contiguous", "clone", "detach", "float")
_BINARY_METHODS = {
    "add": "add", "add_": "add", "sub": "sub", "sub_": "sub",
    "mul": "mul", "mul_": "mul", "div": "div", "div_": "div",
}
_REDUCTIONS = {torch.mean: "mean", torch.amax: "amax", torch.sum: "sum",
               "mean": "mean", "amax": "amax", "sum": "sum"}
# fmt: on
# Roles along which adding a per-channel constant to the input adds a (scaled) constant to the
# output: an offset travels through them and can be folded into the next conv or linear.
LINEAR_ROLES = (
    "spatial",
    "add",
    "sub",
    "cat",
    "merge",
    "flatten",
    "mean",
    "amax",
    "sum",
)


def trace(model):
    """`torch.fx` trace of `model` as a GraphModule that shares the model's submodules.

    Raises:
        ValueError: the model cannot be traced; the message names the innermost module being
            traced when it failed and the last node recorded before.
    """
    return _checks.trace(model, "structured pruning")


def propagate_shapes(graph_module, example_input):
    """{node name: output shape} for every tensor-valued node, from one run on `example_input`.

    The run is in eval mode under `torch.no_grad()`, so BatchNorm statistics and gradients are
    untouched; the training flags of the (shared) submodules are restored afterwards.
    """
    flags = {m: m.training for m in graph_module.modules()}
    graph_module.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(example_input)
    except Exception as error:
        raise ValueError(
            f"the model did not run on example_input of shape {tuple(example_input.shape)}: "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        for module, flag in flags.items():
            module.train(flag)
    shapes = {}
    for node in graph_module.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, TensorMetadata):
            shapes[node.name] = tuple(meta.shape)
    return shapes


def node_role(graph_module, node, shapes):
    """The role of `node` (see the module docstring), checked against the cases we handle.

    Raises:
        ValueError: naming the node, for any operation outside the table.
    """
    shape = shapes.get(node.name)
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    if node.op == "get_attr":
        return "constant"
    if shape is None or len(shape) < 2:
        if node.op == "call_function" and node.target is getattr:
            return "size"  # x.shape: reads sizes, carries no channels
        if node.op == "call_method" and node.target in ("size", "dim"):
            return "size"
        if not any(a.name in shapes for a in _flat_nodes(node.args)):
            return "size"  # arithmetic on sizes
        _unknown(node, "its result has no channel dimension")
    if node.op == "call_module":
        return _module_role(node, graph_module.get_submodule(node.target), shapes)
    target = node.target
    if node.op == "call_function":
        if target in POINTWISE_FUNCTIONS:
            return "pointwise"
        if target in SPATIAL_FUNCTIONS:
            return "spatial"
        if target in BINARY_OPS:
            return BINARY_OPS[target]
        if target in (torch.cat, torch.concat):
            dim = _arg(node, 1, "dim", 0) % len(shape)
            if dim == 0:
                _unknown(node, "concatenation along the batch dimension")
            return "cat" if dim == 1 else "merge"
        if target is torch.flatten:
            return _flatten_role(node, shapes)
        if target in _REDUCTIONS:
            return _reduce_role(node, shapes)
        _unknown(node, f"function {getattr(target, '__name__', target)}")
    if node.op == "call_method":
        if target in _POINTWISE_METHODS:
            return "pointwise"
        if target in _SPATIAL_METHODS:
            return "spatial"
        if target in _BINARY_METHODS:
            return _BINARY_METHODS[target]
        if target == "flatten":
            return _flatten_role(node, shapes)
        if target in ("view", "reshape"):
            return _reshape_role(node, shapes)
        if target in _REDUCTIONS:
            return _reduce_role(node, shapes)
        _unknown(node, f"method .{target}()")
    _unknown(node, f"op {node.op!r}")


# ---------------------------------------------------------------------------------------------


def _module_role(node, module, shapes):
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            _unknown(node, "transposed convolution")
        if module.groups == 1:
            return "conv"
        if module.groups == module.in_channels == module.out_channels:
            return "depthwise"
        _unknown(
            node,
            f"grouped convolution (groups={module.groups}, in_channels={module.in_channels}, "
            f"out_channels={module.out_channels}); only groups=1 and depthwise are supported",
        )
    if isinstance(module, nn.Linear):
        rank = len(shapes[node.args[0].name])
        if rank != 2:
            _unknown(
                node, f"Linear on a {rank}-D input (only (batch, features) inputs)"
            )
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm"
    if isinstance(module, POINTWISE_MODULES):
        return "pointwise"
    if isinstance(module, SPATIAL_MODULES):
        return "spatial"
    if isinstance(module, nn.Flatten):
        return _flatten_role(node, shapes, module.start_dim, module.end_dim)
    _unknown(node, f"module of type {type(module).__name__}")


def _flatten_role(node, shapes, start=None, end=None):
    in_shape = shapes[node.args[0].name]
    if start is None:
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
    start, end = start % len(in_shape), end % len(in_shape)
    if len(in_shape) == 2 or start == end:
        return "spatial"  # nothing to flatten
    if start != 1 or end != len(in_shape) - 1:
        _unknown(node, f"flatten(start_dim={start}, end_dim={end}); only (1, -1)")
    return "flatten"


def _reshape_role(node, shapes):
    in_shape, shape = shapes[node.args[0].name], shapes[node.name]
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if shape == in_shape:
        return "spatial"
    if len(shape) == 2 and len(sizes) == 2 and sizes[1] == -1:
        return "flatten"  # x.view(x.size(0), -1)
    _unknown(
        node,
        f".{node.target}{tuple(sizes)} to a fixed size, which breaks once channels are "
        "removed; write torch.flatten(x, 1) or x.view(x.size(0), -1)",
    )


def _reduce_role(node, shapes):
    rank = len(shapes[node.args[0].name])
    dims = _arg(node, 1, "dim", None)
    dims = (dims,) if isinstance(dims, int) else dims
    if dims is None or any(d % rank in (0, 1) for d in dims):
        _unknown(node, f"a reduction over dims {dims}, which touches the channels")
    return _REDUCTIONS[node.target]


def _arg(node, index, name, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _flat_nodes(args):
    found = []
    fx.node.map_arg(args, found.append)
    return found


def _unknown(node, what):
    raise ValueError(
        f"cannot follow channels through node {node.name!r} ({node.op} {node.target}): {what}. "
        "Known: conv (groups=1 or depthwise), linear (2-D), BatchNorm, the element-wise "
        "modules and functions in POINTWISE_* and SPATIAL_*, add/sub/mul/div, cat, flatten, "
        "spatial mean/amax/sum."
    )
