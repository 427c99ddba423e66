"""Batch-norm folding: merge an inference-mode BatchNorm into the convolution before it.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, arXiv:1712.05877, §3.2; Krishnamoorthi, arXiv:1806.08342, 2018, §3.2.2.
In eval mode BN is a per-channel affine map of the conv output, so with σ = √(var + ε)

    W_fold = W · γ / σ        (per output channel)
    b_fold = β + (b − μ) · γ / σ

and conv_fold(x) = BN(conv(x)). Integer kernels then see one weight tensor and one bias, and
weights are quantized after folding, with the ranges they will actually have.

Entry points: fold_batchnorm(model) -> a folded copy; fold_bn_weights (the core).
"""

import collections
import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from ..pruning.masks import Mask

__all__ = ["fold_batchnorm", "fold_bn_weights", "FOLDABLE"]

# A convolution and the BatchNorm of the same dimensionality that can follow it.
FOLDABLE = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
}


def fold_bn_weights(weight, bias, mean, var, eps, gamma, beta):
    """Core: (W · γ/σ, β + (b − μ) · γ/σ) with σ = √(var + ε); weight (C_out, ...), the rest (C_out,).

    `bias`, `gamma` and `beta` may be None (no conv bias; BN without affine parameters).
    """
    factor = torch.rsqrt(var + eps)  # 1 / σ
    if gamma is not None:
        factor = gamma * factor
    bias = torch.zeros_like(mean) if bias is None else bias
    beta = torch.zeros_like(mean) if beta is None else beta
    shape = [-1] + [1] * (weight.dim() - 1)  # (C_out, 1, 1, 1) against a conv weight
    return weight * factor.reshape(shape), beta + (bias - mean) * factor


def fold_batchnorm(model):
    """A copy of `model` with every BatchNorm that directly follows a Conv folded into it.

    A pair folds when the BatchNorm (1d/2d/3d, with running statistics) reads the output of a
    Conv of the same dimensionality and nothing else reads that output, and each module is
    called once. Other BatchNorms stay as they are. A conv weight under pruning masks folds
    (the per-channel factor commutes with a mask).

    Args:
        model: any `nn.Module` that `torch.fx` can trace.

    Returns:
        A `torch.fx.GraphModule` in eval mode computing what `model` computes in eval mode;
        the caller's model is not changed.

    Raises:
        TypeError: model is not an nn.Module.
        ValueError: the model cannot be traced, or a conv weight to fold carries a
            parametrization other than a pruning mask (fold before quantizing).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).eval()
        >>> folded = fold_batchnorm(net); x = torch.randn(1, 1, 5, 5)
        >>> [type(m).__name__ for m in folded.children()], torch.allclose(folded(x), net(x), atol=1e-6)
        (['Conv2d'], True)
    """
    _checks.check_module(model)
    graph_module = _checks.trace(copy.deepcopy(model), "fold_batchnorm")
    pairs = _foldable_pairs(graph_module)
    for conv_node, _ in pairs:  # check every pair before changing any
        _check_foldable_weight(
            graph_module.get_submodule(conv_node.target), conv_node.target
        )
    with torch.no_grad():
        for conv_node, bn_node in pairs:
            _fold_pair(
                graph_module.get_submodule(conv_node.target),
                graph_module.get_submodule(bn_node.target),
            )
            bn_node.replace_all_uses_with(conv_node)
            graph_module.graph.erase_node(bn_node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module.eval()


def module_calls(graph_module):
    """{module path: how many times the traced graph calls it}; a module called twice (a
    shared layer) cannot be folded or rescaled for one of its uses alone."""
    calls = collections.Counter()
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] += 1
    return calls


def _foldable_pairs(graph_module):
    """(conv node, bn node) pairs that fold, in graph order."""
    modules = dict(graph_module.named_modules())
    calls = module_calls(graph_module)
    pairs = []
    for node in graph_module.graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if (
            not isinstance(bn, nn.modules.batchnorm._BatchNorm)
            or bn.running_mean is None
        ):
            continue
        source = node.args[0] if node.args else None
        if getattr(source, "op", None) != "call_module" or len(source.users) != 1:
            continue
        # isinstance, not type: a parametrized (masked) conv is a subclass torch made for it
        kind = next(
            (c for c in FOLDABLE if isinstance(modules[source.target], c)), None
        )
        if (
            kind
            and type(bn) is FOLDABLE[kind]
            and calls[source.target] == calls[node.target] == 1
        ):
            pairs.append((source, node))
    return pairs


def _check_foldable_weight(conv, name):
    if parametrize.is_parametrized(conv, "weight"):
        others = [
            type(p).__name__
            for p in conv.parametrizations.weight
            if not isinstance(p, Mask)
        ]
        if others:
            raise ValueError(
                f"{name}.weight carries {', '.join(others)}: fold BatchNorm before quantizing "
                "(only pruning masks commute with the per-channel fold)"
            )


def _fold_pair(conv, bn):
    """Write the folded weight and bias into `conv` (its stored weight if masked)."""
    weight = (
        conv.parametrizations.weight.original
        if parametrize.is_parametrized(conv, "weight")
        else conv.weight
    )
    new_weight, new_bias = fold_bn_weights(
        weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    weight.copy_(new_weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(weight.dtype))
    else:
        conv.bias.copy_(new_bias)
