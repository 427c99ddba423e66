"""Cross-layer equalization: rescale the channels two layers share so that their per-channel
weight ranges match, without changing what the network computes.

Nagel, van Baalen, Blankevoort, Welling, "Data-Free Quantization Through Weight Equalization
and Bias Correction", ICCV 2019, arXiv:1906.04721, §4.1. For layers joined by a positively
homogeneous f (f(s·x) = s·f(x) for s > 0: ReLU, LeakyReLU, max and average pooling) and any
S = diag(s) with s > 0,

    W2 f(W1 x + b1) = (W2 S) f(S⁻¹ W1 x + S⁻¹ b1)
    s_i = √(r1_i / r2_i)   makes   r1_i / s_i = r2_i · s_i = √(r1_i · r2_i)

with r1_i = max |W1| over output channel i and r2_i = max |W2| over input channel i. After it,
each channel's range is the same in both layers, so one scale per tensor (per-tensor
quantization) no longer rounds the weights of a narrow channel to a few levels. A layer in a
chain (the depthwise convolution of a MobileNetV2 block) belongs to two pairs; the pairs are
equalized in turn until the scales stop changing, as the paper iterates. Depthwise and grouped
convolutions pair channel by channel like any other.

Entry points: equalize(model) -> an equalized copy; equalization_pairs(graph_module).
Cores: equalization_scales, equalize_pair, input_ranges.

Not done: the paper's high-bias absorption (§4.1.2), which moves part of a large bias b1/s
into the next layer; bias correction (`bias_correction`) is the step we pair with equalization.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from ..pruning.masks import Mask
from .folding import fold_batchnorm, module_calls

__all__ = ["equalize", "equalization_pairs", "equalization_scales", "equalize_pair", "input_ranges"]

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Functions that act on each channel alone and commute with a positive per-channel scale.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu, F.dropout)
# Pooling mixes positions, never channels: allowed between convolutions, not between Linears
# (a pooling over a Linear's output would mix its features).
POOLING = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
RELU6_POLICIES = ("replace", "keep")
# Sweeps over all pairs before giving up on convergence; chains converge geometrically, a
# MobileNetV2 in a few dozen sweeps.
MAX_SWEEPS = 1000


def equalization_scales(r1, r2):
    """Core: s_i = √(r1_i / r2_i), so r1_i / s_i = r2_i · s_i = √(r1_i · r2_i); (C,) each.

    A channel with r = 0 in either layer carries nothing through; it keeps s = 1.
    """
    alive = (r1 > 0) & (r2 > 0)
    return torch.where(alive, torch.sqrt(r1 / torch.where(alive, r2, 1.0)), 1.0)


def equalize_pair(w1, b1, w2, groups=1):
    """Core: (W1 / s, b1 / s, W2 · s, s) for layer 1 of weight (C, ...) and layer 2 of weight
    (C_out, C / groups, ...) reading its C channels (b1 may be None)."""
    r1 = w1.abs().reshape(w1.shape[0], -1).amax(1)  # (C,) per output channel of layer 1
    r2 = input_ranges(w2, groups)  # (C,) per input channel of layer 2
    s = equalization_scales(r1, r2)
    b1 = None if b1 is None else b1 / s
    return _scale_outputs(w1, s), b1, _scale_inputs(w2, s, groups), s


def input_ranges(weight, groups=1):
    """r_j = max |W| over all weights that read input channel j: (C_in,) for a Linear weight
    (C_out, C_in) or a conv weight (C_out, C_in / groups, *kernel)."""
    if groups == 1:  # every output reads every input channel
        return weight.abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1)
    index = _input_index(weight, groups)  # (C_out, C_in / groups)
    peak = weight.abs().reshape(*index.shape, -1).amax(2)  # (C_out, C_in / groups)
    ranges = torch.zeros(groups * weight.shape[1], dtype=weight.dtype, device=weight.device)
    return ranges.scatter_reduce(0, index.flatten(), peak.flatten(), "amax")


def equalize(model, relu6="replace", fold_bn=True, tol=1e-6):
    """A copy of `model` with every pair of consecutive layers equalized (Nagel et al. 2019).

    A pair is a Conv (or Linear) whose output goes, through ReLU, LeakyReLU, identity, dropout
    or (between convolutions) pooling and nothing else, into the next Conv (Linear) of the
    same dimensionality; each layer is called once. BatchNorm between two layers blocks a pair
    (its shift is not homogeneous), so it is folded first by default. The copy computes what
    `model` computes in eval mode (after the ReLU6 replacement below), to rounding error.

    Args:
        model: an `nn.Module` that torch.fx can trace.
        relu6: "replace" (default, what the paper does for MobileNetV2, §5: every ReLU6
            becomes a ReLU, which changes the float model a little, 71.72 → 71.70 % top-1 in
            their Table 1, and lets pairs span it) or "keep" (ReLU6, min(max(x, 0), 6), is
            not positively homogeneous: no pair spans it).
        fold_bn: fold BatchNorm into the convolutions first (`fold_batchnorm`).
        tol: stop sweeping when every scale s_i is within a factor exp(±tol) of 1, a float
            in (0, 1); pairs that share no layer converge in one sweep.

    Returns:
        A `torch.fx.GraphModule` in eval mode; `model` is unchanged.

    Raises:
        TypeError / ValueError: a bad argument, an untraceable model, no pair to equalize, a
            weight carrying a parametrization other than a pruning mask (equalize before
            quantizing), or a NaN/inf weight.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> with torch.no_grad(): _ = net[0].weight.copy_(torch.tensor([[4.0, 0], [0, 0.1]]))
        >>> with torch.no_grad(): _ = net[2].weight.copy_(torch.tensor([[1.0, 0.1]]))
        >>> eq = equalize(net); w1, w2 = eq.get_submodule("0").weight, eq.get_submodule("2").weight
        >>> w1.detach().abs().amax(1), w2.detach().abs().amax(0)   # √(4·1), √(0.1·0.1) each
        (tensor([2.0000, 0.1000]), tensor([2.0000, 0.1000]))
    """
    relu6 = _checks.check_choice(relu6, "relu6", RELU6_POLICIES)
    fold_bn = _checks.check_bool(fold_bn, "fold_bn")
    tol = _checks.check_real(tol, "tol", low=0, high=1, low_open=True, high_open=True)
    _checks.check_module(model)
    graph_module = (
        fold_batchnorm(model) if fold_bn else _checks.trace(copy.deepcopy(model), "equalize")
    )
    if relu6 == "replace":
        _replace_relu6(graph_module)
    pairs = equalization_pairs(graph_module)
    if not pairs:
        raise ValueError(
            f"{type(model).__name__} has no pair of Conv/Linear layers joined only by ReLU, "
            "LeakyReLU or pooling: nothing to equalize (BatchNorm between layers blocks a "
            "pair unless folded; ReLU6 blocks one unless relu6='replace')"
        )
    layers = {name: graph_module.get_submodule(name) for pair in pairs for name in pair}
    for name, layer in layers.items():  # check everything before changing anything
        _stored_weight(layer, name)
        _checks.check_tensor(layer.weight, f"weight of layer {name!r}", finite=True)
    with torch.no_grad():
        for _ in range(MAX_SWEEPS):
            change = max(_equalize_layers(layers[a], layers[b]) for a, b in pairs)
            if change < tol:
                break
    return graph_module.eval()


def equalization_pairs(graph_module):
    """[(first, second)] names of the layer pairs `equalize` rescales, in graph order.

    `graph_module` is a `torch.fx.GraphModule` (BatchNorm already folded, ReLU6 replaced
    if it should be); ReLU6 is not positively homogeneous and ends a pair.
    """
    modules = dict(graph_module.named_modules())
    calls = module_calls(graph_module)
    pairs = []
    for node in graph_module.graph.nodes:
        first = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(first, LAYERS) or calls[node.target] != 1:
            continue
        current = node
        while len(current.users) == 1:
            reader = next(iter(current.users))
            if not reader.args or reader.args[0] is not current:
                break
            second = modules.get(reader.target) if reader.op == "call_module" else None
            if isinstance(second, LAYERS):
                if _same_kind(first, second) and calls[reader.target] == 1:
                    pairs.append((node.target, reader.target))
                break
            if not _passes(reader, modules, pooling=not isinstance(first, nn.Linear)):
                break
            current = reader
    return pairs


# ---------------------------------------------------------------------------------------------


def _equalize_layers(first, second):
    """Equalize one pair in place; returns max |log s|, how far this step moved the pair."""
    groups = getattr(second, "groups", 1)
    *_, s = equalize_pair(first.weight, first.bias, second.weight, groups)
    stored1, stored2 = _stored_weight(first), _stored_weight(second)
    # The scales multiply the stored weights: a pruning mask is applied after, and commutes.
    stored1.copy_(_scale_outputs(stored1, s))
    stored2.copy_(_scale_inputs(stored2, s, groups))
    if first.bias is not None:
        first.bias.copy_(first.bias / s)
    return float(s.log().abs().max())


def _scale_outputs(weight, s):
    return weight / s.reshape(-1, *[1] * (weight.dim() - 1))


def _scale_inputs(weight, s, groups):
    if groups == 1:
        return weight * s.reshape(1, -1, *[1] * (weight.dim() - 2))
    factor = s[_input_index(weight, groups)]  # (C_out, C_in / groups)
    return weight * factor.reshape(*factor.shape, *[1] * (weight.dim() - 2))


def _input_index(weight, groups):
    """(C_out, C_in / groups): the input channel that each weight column reads."""
    out_channels, per_group = weight.shape[0], weight.shape[1]
    group = torch.arange(out_channels, device=weight.device) // (out_channels // groups)
    return group[:, None] * per_group + torch.arange(per_group, device=weight.device)


def _same_kind(first, second):
    linear = isinstance(first, nn.Linear), isinstance(second, nn.Linear)
    if any(linear):
        return all(linear)
    return first.weight.dim() == second.weight.dim()  # Conv2d with Conv2d, ...


def _passes(node, modules, pooling):
    """Does this node apply a per-channel positively homogeneous function to its input alone?"""
    kinds = ELEMENTWISE + POOLING if pooling else ELEMENTWISE
    if node.op == "call_module":
        return isinstance(modules[node.target], kinds)
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _replace_relu6(graph_module):
    """Every ReLU6 module and F.relu6 call becomes a ReLU (the paper's MobileNetV2 recipe)."""
    for name, module in list(graph_module.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, child = name.rpartition(".")
            setattr(graph_module.get_submodule(parent), child, nn.ReLU(module.inplace))
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target is F.relu6:
            node.target = F.relu
    graph_module.recompile()


def _stored_weight(layer, name="layer"):
    """The tensor to rescale: the weight, or its stored original under pruning masks."""
    if not parametrize.is_parametrized(layer, "weight"):
        return layer.weight
    others = [type(p).__name__ for p in layer.parametrizations.weight if not isinstance(p, Mask)]
    if others:
        raise ValueError(
            f"{name}.weight carries {', '.join(others)}: equalize before quantizing (only "
            "pruning masks commute with a per-channel scale)"
        )
    return layer.parametrizations.weight.original
