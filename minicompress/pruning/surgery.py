"""Model surgery: cut channels out of every coupled weight, bias, statistic and stored tensor.

Removing channel c of a group slices, with the same indices, the output rows of the layers
that produce it, the input columns of the layers that read it (after a flatten, its H*W
features), depthwise filters, BatchNorm and LayerNorm parameters and statistics, and stored
tensors such as a layer scale; how each layer kind is cut is `layer_kinds.KINDS[kind].cut`.
Optionally the constant that removed channels contributed is folded into the layers that read
them first (`compensation`).

    remove_channels(model, graph, keep, compensate=False)   the smaller model, a new object
    group_starts(graph)                                     where each group's channels start
                                                            (from `dependency`)
"""

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from .compensation import apply_folds, removal_folds
from .dependency import check_graph, group_starts
from .layer_kinds import KINDS

__all__ = ["remove_channels", "group_starts"]


def remove_channels(model, graph, keep, compensate=False):
    """Return a copy of `model` without the channels that `keep` marks False.

    Every layer coupled to a removed channel shrinks (weights, biases, BatchNorm running
    statistics, `in_channels` / `out_channels` / `num_features` / `normalized_shape`);
    num_batches_tracked is unchanged.

    Args:
        model: the model `graph` was built from; it is not modified.
        graph: `build_dependency_graph(model, example_input)`.
        keep: {group index: bool tensor of shape (group.size,)}, True = keep. Groups left out
            keep every channel. Only prunable groups may lose channels, and never all of them.
        compensate: fold the constant output of each removed channel (`channel_constants`)
            into the layers that read it (activation-offset compensation). Exact for channels
            whose BatchNorm scale is zero, up to zero-padded borders.

    Returns:
        A new, physically smaller `nn.Module` of the same class.

    Raises:
        TypeError, ValueError: a malformed `keep`, a fixed group asked to lose channels, a
            group asked to lose every channel, a parametrized layer (call `make_permanent`
            first), or a graph that does not describe `model`.

    Example:
        >>> net = models.build("lenet5")
        >>> graph = build_dependency_graph(net, torch.zeros(1, 1, 28, 28))
        >>> keep = {graph.group_of("conv1").index: torch.tensor([1, 0, 1, 1, 0, 1]).bool()}
        >>> remove_channels(net, graph, keep).conv1
        Conv2d(1, 4, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
    """
    flat_keep = _check(model, graph, keep)
    compensate = _checks.check_bool(compensate, "compensate")
    folds = removal_folds(graph, flat_keep) if compensate else {}
    pruned = copy.deepcopy(model)
    apply_folds(pruned, folds)  # on the full-size layers, before they are cut
    starts = group_starts(graph)
    for layer in graph.layers.values():
        row_keep = flat_keep[starts[layer.out_group] + layer.out_channel]
        col_keep = None
        if layer.in_group is not None:
            col_keep = flat_keep[starts[layer.in_group] + layer.in_channel]
        if not row_keep.all() or (col_keep is not None and not col_keep.all()):
            KINDS[layer.kind].cut(pruned.get_submodule(layer.name), row_keep, col_keep)
    for target, (dim, groups, channels) in graph.parameters.items():
        kept = flat_keep[starts[groups] + channels]
        if not kept.all():
            _cut_stored(pruned, target, dim, kept)
    return pruned


# ---------------------------------------------------------------------------------------------


def _check(model, graph, keep):
    check_graph(model, graph)
    if not isinstance(keep, dict):
        raise TypeError(
            f"keep must be a dict {{group index: bool mask}}, got {type(keep).__name__}"
        )
    for layer in graph.layers.values():
        if parametrize.is_parametrized(model.get_submodule(layer.name)):
            raise ValueError(
                f"layer {layer.name!r} is parametrized (a mask or quantizer); make it "
                "permanent first (pruning.make_permanent for masks)"
            )
    unknown = [
        k for k in keep if not isinstance(k, int) or not 0 <= k < len(graph.groups)
    ]
    if unknown:
        raise ValueError(f"keep names groups {unknown} that the graph does not have")
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
        masks.append(mask.cpu())
    return torch.cat(masks) if masks else torch.ones(0, dtype=torch.bool)


def _cut_stored(model, target, dim, kept):
    """Slice the stored tensor at `target` (a layer scale, say) along `dim`."""
    owner_name, _, attribute = target.rpartition(".")
    owner = model.get_submodule(owner_name)
    old = getattr(owner, attribute)
    new = (
        old.detach().index_select(dim, kept.nonzero().flatten().to(old.device)).clone()
    )
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new, requires_grad=old.requires_grad)
    setattr(owner, attribute, new)

