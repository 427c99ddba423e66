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

import torch
from torch import nn

from .. import _checks
from .constant_flow import ConstantRule, OffsetRule, per_channel, run
from .dependency import require_graph
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
    require_graph(graph)
    if flat_keep is not None:
        _check_keep(graph, flat_keep)
    values = run(graph, ConstantRule(graph, flat_keep))
    return {
        name: per_channel(v, 1)
        for name, v in values.items()
        if isinstance(v, torch.Tensor) and v.dim() > 1
    }


def removal_folds(graph, flat_keep):
    """Folds for `surgery.remove_channels(compensate=True)`: each layer that reads removed
    channels absorbs what their constant values contributed."""
    require_graph(graph)
    _check_keep(graph, flat_keep)
    rule = ConstantRule(graph, flat_keep)
    values = run(graph, rule)
    nodes = {n.name: n for n in graph.graph_module.graph.nodes}
    folds = {}
    for layer in graph.layers.values():
        if layer.in_group is None:
            continue
        removed = ~flat_keep[rule.starts[layer.in_group] + layer.in_channel]  # (cols,)
        if not removed.any():
            continue
        reads = nodes[layer.node].args[0].name
        value = per_channel(values[reads], KINDS[layer.kind].channel_dim)
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
    require_graph(graph)
    if not isinstance(offsets, dict):
        raise TypeError(
            f"offsets must be a dict {{node name: (C,) tensor}}, got {type(offsets).__name__}"
        )
    for node, offset in offsets.items():
        shape = graph.shapes.get(node)
        if (
            not isinstance(shape, tuple)
            or len(shape) < 2
            or graph.node_channels(node) is None
        ):
            raise ValueError(
                f"offsets names {node!r}, which is not a node of the graph that carries channels"
            )
        _checks.check_tensor(offset, f"offsets[{node!r}]", dims=1, finite=True)
        if len(offset) != shape[1]:
            raise ValueError(
                f"offsets[{node!r}] must have shape ({shape[1]},), got {tuple(offset.shape)}"
            )
    skip = _checks.check_names(skip, "skip")
    folds = {}
    fold = lambda layer, shift: _fold(graph, layer, shift, folds)  # noqa: E731
    run(graph, OffsetRule(graph, offsets, set(skip), fold))
    return folds


def apply_folds(model, folds):
    """Add each fold of `fold_offsets` / `removal_folds` to `model` in place.

    ("name", "bias") adds to the layer's bias, creating it when the layer has none;
    ("name", "running_mean") adds to a BatchNorm's running mean.
    """
    _checks.check_module(model)
    if not isinstance(folds, dict):
        raise TypeError(
            f"folds must be a dict {{(module name, attribute): tensor}}, got {type(folds).__name__}"
        )
    for key, delta in folds.items():  # every fold fits before the first is written
        name, attribute = (
            key if isinstance(key, tuple) and len(key) == 2 else (key, None)
        )
        _checks.check_module_names(model, [name], "folds")
        if attribute not in ("bias", "running_mean"):
            raise ValueError(
                f"folds may add to a 'bias' or a 'running_mean', got {key!r}"
            )
        _checks.check_tensor(delta, f"folds[{key!r}]", dims=1, finite=True)
        module = model.get_submodule(name)
        rows = (
            module.weight.shape[0] if attribute == "bias" else len(module.running_mean)
        )
        if len(delta) != rows:
            raise ValueError(
                f"folds[{key!r}] must have shape ({rows},), got {tuple(delta.shape)}"
            )
    with torch.no_grad():
        for (name, attribute), delta in folds.items():
            module = model.get_submodule(name)
            current = getattr(module, attribute)
            if current is None:  # a conv without bias gets one to hold the offset
                module.bias = nn.Parameter(delta.clone().to(module.weight))
            else:
                current.add_(delta.to(current))


# ---------------------------------------------------------------------------------------------


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


def _module(graph, name):
    return graph.graph_module.get_submodule(name)


def _check_keep(graph, flat_keep):
    total = sum(g.size for g in graph.groups)
    if not isinstance(flat_keep, torch.Tensor) or flat_keep.dtype != torch.bool:
        raise TypeError(
            f"flat_keep must be a bool tensor over all groups' channels, got {flat_keep!r:.60}"
        )
    if flat_keep.shape != (total,):
        raise ValueError(
            f"flat_keep must have shape ({total},), got {tuple(flat_keep.shape)}"
        )
