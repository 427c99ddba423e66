"""The channel-role table: what every node of a torch.fx trace does to channels.

Every node gets exactly one role, or an error that names it; an unknown operation is never
treated as element-wise. The dependency graph (`channel_flow`), surgery, compensation and
residual-unit removal all read the roles from here.

    role          nodes                                              channel c of the output
    input         the model's input                                  fixed
    parameter     get_attr (a tensor stored on the model)            cut with the channels it meets
    size          x.shape, x.size(0), asserts (not tensors)          -
    output        the model's output                                 fixed
    <layer kind>  conv, grouped, depthwise, linear, norm, layernorm  see `layer_kinds`
    pointwise     activations (`POINTWISE_*`)                        f(input channel c)
    spatial       pooling, dropout, stochastic depth, identity,      input channel c, moved in
                  resampling (`SPATIAL_*`)                           space or scaled per sample
    add/sub/mul/div   two tensors, or a tensor and a number          c of both inputs
    cat           torch.cat                                          the inputs side by side
    reshape       view, reshape, flatten                             the same elements, regrouped
    permute       permute, transpose                                 the same, dims reordered
    getitem       x[...] on a tensor or a tuple                      the elements indexed
    split         chunk, split                                       equal parts along a dim
    mean/amax/sum reductions over dims without channels              input channel c
    opaque        attention (`OPAQUE_*`)                             fixed: not followed inside

Entry points: `trace(model)`, `propagate_shapes(graph_module, example_input)`,
`node_role(graph_module, node, shapes)`.
"""

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torchvision.models import swin_transformer as _swin
from torchvision.ops import StochasticDepth, stochastic_depth

from .. import _checks
from .layer_kinds import layer_kind

__all__ = [
    "trace",
    "propagate_shapes",
    "node_role",
    "POINTWISE_MODULES",
    "POINTWISE_FUNCTIONS",
    "SPATIAL_MODULES",
    "SPATIAL_FUNCTIONS",
    "BINARY_OPS",
    "OPAQUE_MODULES",
    "OPAQUE_FUNCTIONS",
    "LINEAR_ROLES",
    "IDENTITY_IN_EVAL",
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
# Per-channel maps that move values around or scale whole samples, and commute with adding a
# per-channel constant: pooling, resampling, identity; dropout and stochastic depth (Huang et
# al. 2016, which zeroes whole samples of a residual branch) are the identity in eval mode.
SPATIAL_MODULES = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, StochasticDepth,
)
SPATIAL_FUNCTIONS = (
    F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool2d, F.interpolate, stochastic_depth,
)
# What a trace records with the training flag it had: the identity when values are computed.
IDENTITY_IN_EVAL = (F.dropout, F.dropout2d, stochastic_depth)
BINARY_OPS = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
}
# Attention mixes channels through learned projections we do not cut: its inputs and outputs
# stay whole (the hidden units of the MLP blocks around it can still be pruned).
OPAQUE_MODULES = (nn.MultiheadAttention,)
OPAQUE_FUNCTIONS = tuple(
    f for f in (getattr(_swin, n, None) for n in (
        "shifted_window_attention", "_patch_merging_pad", "_get_relative_position_bias"))
    if f is not None
)
_METHODS = {
    "relu": "pointwise", "relu_": "pointwise", "sigmoid": "pointwise", "tanh": "pointwise",
    "contiguous": "spatial", "clone": "spatial", "detach": "spatial", "float": "spatial",
    "expand": "spatial", "add": "add", "add_": "add", "sub": "sub", "sub_": "sub",
    "mul": "mul", "mul_": "mul", "div": "div", "div_": "div", "flatten": "reshape",
    "view": "reshape", "reshape": "reshape", "permute": "permute", "transpose": "permute",
    "chunk": "split", "split": "split", "mean": "mean", "amax": "amax", "sum": "sum",
}
_FUNCTIONS = {
    torch.cat: "cat", torch.concat: "cat", torch.flatten: "reshape", torch.reshape: "reshape",
    torch.permute: "permute", torch.transpose: "permute", operator.getitem: "getitem",
    torch.chunk: "split", torch.split: "split", torch.mean: "mean", torch.amax: "amax",
    torch.sum: "sum", F.layer_norm: "layernorm",
}
# fmt: on
# Roles through which adding a per-channel constant to the input adds a (scaled) constant to
# the output: an offset travels through them and can be folded into the next layer.
LINEAR_ROLES = (
    "spatial",
    "add",
    "sub",
    "cat",
    "reshape",
    "permute",
    "getitem",
    "split",
)
LINEAR_ROLES += ("mean", "amax", "sum")


def trace(model):
    """`torch.fx` trace of `model` as a GraphModule that shares the model's submodules.

    Raises:
        ValueError: the model cannot be traced; the message names the innermost module being
            traced when it failed and the last node recorded before.
    """
    return _checks.trace(model, "structured pruning")


def propagate_shapes(graph_module, example_input):
    """{node name: output shape} for every tensor-valued node (a list of shapes for a node that
    returns a tuple), from one run on `example_input`.

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
        elif isinstance(meta, (tuple, list)) and any(
            isinstance(m, TensorMetadata) for m in meta
        ):
            shapes[node.name] = [
                tuple(m.shape) if isinstance(m, TensorMetadata) else None for m in meta
            ]
    return shapes


def node_role(graph_module, node, shapes):
    """The role of `node` (see the module docstring).

    Raises:
        ValueError: naming the node, for any operation outside the table.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return {"placeholder": "input", "output": "output", "get_attr": "parameter"}[
            node.op
        ]
    if node.name not in shapes:
        return "size"  # not a tensor: sizes, asserts and arithmetic on them
    target = node.target
    if node.op == "call_module":
        module = graph_module.get_submodule(target)
        kind = layer_kind(module)
        if kind is not None:
            return kind
        for types, role in (
            (POINTWISE_MODULES, "pointwise"),
            (SPATIAL_MODULES, "spatial"),
            (OPAQUE_MODULES, "opaque"),
            ((nn.Flatten,), "reshape"),
        ):
            if isinstance(module, types):
                return role
        unknown(node, f"module of type {type(module).__name__}")
    if node.op == "call_function":
        for group, role in (
            (POINTWISE_FUNCTIONS, "pointwise"),
            (SPATIAL_FUNCTIONS, "spatial"),
            (OPAQUE_FUNCTIONS, "opaque"),
        ):
            if target in group:
                return role
        if target in BINARY_OPS or target in _FUNCTIONS:
            return BINARY_OPS.get(target) or _FUNCTIONS[target]
        unknown(node, f"function {getattr(target, '__name__', target)}")
    if target in _METHODS:
        return _METHODS[target]
    unknown(node, f"method .{target}()")


def argument(node, index, name, default=None):
    """Argument `index` of `node`, positional or by keyword `name`."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def unknown(node, what):
    """Raise the error every unsupported node gets."""
    raise ValueError(
        f"cannot follow channels through node {node.name!r} ({node.op} "
        f"{getattr(node.target, '__name__', node.target)}): {what}. Known: the layer kinds of "
        "layer_kinds (conv, grouped, depthwise, linear, BatchNorm, LayerNorm), the modules and "
        "functions in POINTWISE_*, SPATIAL_* and OPAQUE_*, add/sub/mul/div, cat, view/reshape/"
        "flatten, permute/transpose, indexing, chunk/split, mean/amax/sum over dims without "
        "channels."
    )


def literal(value):
    """Whether a size argument is a number written into the trace (not computed from a tensor)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_node(value):
    return isinstance(value, fx.Node)
