"""The layer kinds structured pruning cuts, one small set of rules per kind, written once.

For each kind (`KINDS`): which input dim holds the channels, how output channels relate to
input channels (`couple`), how the module is sliced (`cut`), what a removed output channel
outputs as a constant (`constant`) and how a per-channel offset on the input shifts the
output (`absorb`). The dependency graph, surgery, compensation and residual-unit removal read
them from here; a new kind is one `LayerKind` entry, a line in `layer_kind` and one test.

    kind       modules                                  output channel o reads
    conv       Conv{1,2,3}d with groups = 1             every input channel (a new channel)
    grouped    Conv with 1 < groups < in_channels       the inputs of its group; channel j of
               (ResNeXt, RegNet)                        every group is pruned together, so the
                                                        groups stay equal (Xie et al. 2017)
    depthwise  Conv with groups = in_channels           input channel o // (out / in)
    linear     Linear, on the last dim of any input     every input feature (a new feature)
    norm       BatchNorm{1,2,3}d                        input channel o
    layernorm  LayerNorm over the last dim              input channel o (ConvNeXt, transformers)

Shapes: rows are weight dim 0 (the features of a norm), cols are weight dim 1 (C_in / groups).
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = ["LayerKind", "KINDS", "layer_kind", "PRODUCERS"]


@dataclass(frozen=True)
class LayerKind:
    """The rules of one kind. `channel_dim`: the input dim holding channels (1 or -1).
    `couple(module, atoms, union, new) -> (rows, cols)`: channel ids of each output row and
    input col (None: the layer has no separate input side). `cut(module, row_keep, col_keep)`
    slices it in place. `constant(module, x) -> (rows,)`: the output of removed rows given the
    per-channel input constant x. `absorb(module, offset) -> (rows,)`: the output shift from a
    per-channel input offset."""

    channel_dim: int
    couple: Callable
    cut: Callable
    constant: Callable
    absorb: Callable


def layer_kind(module):
    """The name of `module`'s kind in `KINDS`, or None for a module that is no layer we cut."""
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        if module.groups == 1:
            return "conv"
        return "depthwise" if module.groups == module.in_channels else "grouped"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return "layernorm"
    return None


# -- couple: channel ids of rows and cols, from the atoms of the input channels ---------------


def _couple_dense(module, atoms, union, new):
    return new(module.weight.shape[0]), atoms  # every row a new channel, every col read


def _couple_grouped(module, atoms, union, new):
    # Channel j of every group must go together, or the groups would differ in size.
    grid = atoms.reshape(module.groups, -1)  # (groups, C_in / groups)
    for row in grid[1:]:
        union(grid[0], row)
    return np.tile(new(module.out_channels // module.groups), module.groups), grid[0]


def _couple_depthwise(module, atoms, union, new):
    return np.repeat(atoms, module.out_channels // module.in_channels), None


def _couple_channelwise(module, atoms, union, new):
    return atoms, None


# -- cut: slice in place ----------------------------------------------------------------------


def _cut_conv(module, row_keep, col_keep):
    weight = _sliced(
        module, "weight", row_keep, col_keep
    )  # (C_out', C_in' / groups, ...)
    _sliced(module, "bias", row_keep)
    module.out_channels, module.in_channels = (
        weight.shape[0],
        weight.shape[1] * module.groups,
    )


def _cut_depthwise(module, row_keep, col_keep):
    multiplier = module.out_channels // module.in_channels
    weight = _sliced(module, "weight", row_keep)  # (C_out', 1, ...): whole groups go
    _sliced(module, "bias", row_keep)
    module.out_channels = weight.shape[0]
    module.in_channels = module.groups = weight.shape[0] // multiplier


def _cut_linear(module, row_keep, col_keep):
    weight = _sliced(module, "weight", row_keep, col_keep)
    _sliced(module, "bias", row_keep)
    module.out_features, module.in_features = weight.shape


def _cut_norm(module, row_keep, col_keep):
    for name in ("weight", "bias", "running_mean", "running_var"):
        _sliced(module, name, row_keep)
    module.num_features = int(row_keep.sum())


def _cut_layernorm(module, row_keep, col_keep):
    _sliced(module, "weight", row_keep)
    _sliced(module, "bias", row_keep)
    module.normalized_shape = (int(row_keep.sum()),)


# -- constant and absorb: what compensation needs ---------------------------------------------


def _bias(module, x=None):
    """The output of a channel whose weights (or whose normalized part, gamma = 0) are gone."""
    rows = module.weight.shape[0] if module.weight is not None else len(x)
    return module.bias.detach() if module.bias is not None else torch.zeros(rows)


def _constant_depthwise(module, x):
    spread = torch.repeat_interleave(x, module.out_channels // module.in_channels)
    return spread * module.weight.detach().flatten(1).sum(1) + _bias(module)


def _absorb_dense(module, offset):
    weight = module.weight.detach()
    summed = weight.flatten(2).sum(2) if weight.dim() > 2 else weight  # (rows, cols)
    return summed @ offset.to(summed)


def _absorb_grouped(module, offset):
    summed = module.weight.detach().flatten(2).sum(2)  # (C_out, C_in / groups)
    grid = offset.to(summed).reshape(module.groups, -1)  # (groups, C_in / groups)
    per_group = module.out_channels // module.groups
    return (summed * grid.repeat_interleave(per_group, 0)).sum(1)


def _absorb_depthwise(module, offset):
    return _constant_depthwise(module, offset) - _bias(module)


def _absorb_norm(module, offset):
    # BN(x + o) = BN'(x) with running_mean' = running_mean - o: the "shift" is on the mean.
    if module.running_mean is None:
        raise ValueError(
            "a BatchNorm without running statistics cannot absorb an offset"
        )
    return -offset


def _absorb_layernorm(module, offset):
    raise ValueError(
        "LayerNorm normalizes across channels, so an offset on its input is not a shift of "
        "its output; use compensate=False"
    )


KINDS = {
    "conv": LayerKind(1, _couple_dense, _cut_conv, _bias, _absorb_dense),
    "grouped": LayerKind(1, _couple_grouped, _cut_conv, _bias, _absorb_grouped),
    "depthwise": LayerKind(
        1, _couple_depthwise, _cut_depthwise, _constant_depthwise, _absorb_depthwise
    ),
    "linear": LayerKind(-1, _couple_dense, _cut_linear, _bias, _absorb_dense),
    "norm": LayerKind(1, _couple_channelwise, _cut_norm, _bias, _absorb_norm),
    "layernorm": LayerKind(
        -1, _couple_channelwise, _cut_layernorm, _bias, _absorb_layernorm
    ),
}
# Kinds whose output rows are new channels: the layers that produce a channel group.
PRODUCERS = ("conv", "grouped", "linear")


def _sliced(module, name, row_keep, col_keep=None):
    """Replace tensor `name` of `module` by its kept rows (and cols); returns the new tensor."""
    old = getattr(module, name)
    if old is None:
        return None
    new = old.detach()[row_keep.nonzero().flatten()]
    if col_keep is not None:
        new = new[:, col_keep.nonzero().flatten()]
    if isinstance(old, nn.Parameter):
        setattr(
            module, name, nn.Parameter(new.clone(), requires_grad=old.requires_grad)
        )
    else:
        setattr(module, name, new.clone())
    return new
