"""Model surgery: cut channels out of every coupled weight, bias and BatchNorm statistic.

Removing channel c of a group slices, with the same indices, the output rows of the layers
that produce it, the input columns of the layers that read it (after a flatten, its H*W
features), depthwise filters, and the BatchNorm weight, bias, running_mean and running_var.
Optionally the constant that removed channels contributed is folded into the layers that read
them first (`compensation`).

    remove_channels(model, graph, keep, compensate=False)   the smaller model, a new object
"""

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .compensation import apply_folds, removal_folds
from .dependency import DependencyGraph

__all__ = ["remove_channels", "group_starts"]


def remove_channels(model, graph, keep, compensate=False):
    """Return a copy of `model` without the channels that `keep` marks False.

    Every layer coupled to a removed channel shrinks: conv and linear weights (output rows and
    input columns; after a flatten, the H*W features of the channel), biases, depthwise
    filters, BatchNorm weight, bias, running_mean and running_var (num_batches_tracked is
    unchanged), and the `in_channels` / `out_channels` / `num_features` attributes.

    Args:
        model: the model `graph` was built from; it is not modified.
        graph: `build_dependency_graph(model, example_input)`.
        keep: {group index: bool tensor of shape (group.size,)}, True = keep. Groups left out
            keep every channel. Only prunable groups may lose channels, and never all of them.
        compensate: fold the constant output of each removed channel (`channel_constants`)
            into the layers that read it (activation-offset compensation). Exact for channels
            whose BatchNorm scale is zero, up to the border effect described above.

    Returns:
        A new, physically smaller `nn.Module` of the same class.

    Raises:
        TypeError, ValueError: a malformed `keep`, a fixed group asked to lose channels, a
            group asked to lose every channel, a parametrized layer (make the parametrization
            permanent first), or a graph that does not describe `model`.
    """
    flat_keep = _check(model, graph, keep)
    folds = removal_folds(graph, flat_keep) if compensate else {}
    pruned = copy.deepcopy(model)
    apply_folds(pruned, folds)  # on the full-size layers, before they are cut
    starts = group_starts(graph)
    for layer in graph.layers.values():
        out_keep = flat_keep[starts[layer.out_group] + layer.out_channel]
        in_keep = None
        if layer.in_group is not None:
            in_keep = flat_keep[starts[layer.in_group] + layer.in_channel]
        if not out_keep.all() or (in_keep is not None and not in_keep.all()):
            _cut(pruned.get_submodule(layer.name), layer.kind, out_keep, in_keep)
    return pruned


# ---------------------------------------------------------------------------------------------


def _check(model, graph, keep):
    if not isinstance(graph, DependencyGraph):
        raise TypeError(f"graph must be a DependencyGraph, got {type(graph).__name__}")
    if not isinstance(keep, dict):
        raise TypeError(
            f"keep must be a dict {{group index: bool mask}}, got {type(keep).__name__}"
        )
    modules = dict(model.named_modules())
    for layer in graph.layers.values():
        module = modules.get(layer.name)
        if module is not graph.graph_module.get_submodule(layer.name):
            raise ValueError(
                f"graph does not describe this model (its layer {layer.name!r} is another "
                "object); build the graph from the model you prune"
            )
        if parametrize.is_parametrized(module):
            raise ValueError(
                f"layer {layer.name!r} is parametrized (a mask or quantizer); make it permanent "
                "with torch.nn.utils.parametrize.remove_parametrizations before removing channels"
            )
    masks = []
    for group in graph.groups:
        mask = keep.get(group.index)
        if mask is None:
            mask = torch.ones(group.size, dtype=torch.bool)
        elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"keep[{group.index}] must be a bool tensor, got {mask!r}")
        elif mask.shape != (group.size,):
            raise ValueError(
                f"keep[{group.index}] must have shape ({group.size},), got {tuple(mask.shape)}"
            )
        elif not mask.any():
            raise ValueError(
                f"keep[{group.index}] removes every channel of group {group.index} (sources "
                f"{group.sources}); keep at least one"
            )
        elif not group.prunable and not mask.all():
            raise ValueError(
                f"group {group.index} (sources {group.sources}) cannot lose channels: {group.reason}"
            )
        masks.append(mask)
    unknown = set(keep) - {g.index for g in graph.groups}
    if unknown:
        raise ValueError(
            f"keep names groups {sorted(unknown)} that the graph does not have"
        )
    return torch.cat(masks) if masks else torch.ones(0, dtype=torch.bool)


def group_starts(graph):
    """Offset of each group's first channel in the concatenation of all groups' masks."""
    sizes = torch.tensor([0] + [g.size for g in graph.groups])
    return sizes.cumsum(0)


def _cut(module, kind, out_keep, in_keep):
    """Slice one layer in place. out_keep/in_keep are bool masks over weight dims 0 and 1."""
    out_idx = out_keep.nonzero().flatten()
    weight = module.weight
    if kind == "norm":
        if weight is not None:
            module.weight = _parameter(weight, weight.detach()[out_idx])
            module.bias = _parameter(module.bias, module.bias.detach()[out_idx])
        if module.running_mean is not None:
            module.running_mean = module.running_mean[out_idx].clone()
            module.running_var = module.running_var[out_idx].clone()
        module.num_features = len(out_idx)
        return
    new = weight.detach()[out_idx]  # (C_out', C_in, ...)
    if in_keep is not None:
        new = new[:, in_keep.nonzero().flatten()]  # (C_out', C_in', ...)
    module.weight = _parameter(weight, new)
    if module.bias is not None:
        module.bias = _parameter(module.bias, module.bias.detach()[out_idx])
    if kind == "linear":
        module.out_features, module.in_features = new.shape[0], new.shape[1]
    elif kind == "depthwise":  # groups == in == out channels, weight (C, 1, kH, kW)
        module.out_channels = module.in_channels = module.groups = len(out_idx)
    else:
        module.out_channels, module.in_channels = new.shape[0], new.shape[1]


def _parameter(old, data):
    return nn.Parameter(data.clone(), requires_grad=old.requires_grad)
