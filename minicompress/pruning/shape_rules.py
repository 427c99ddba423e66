"""How channels flow through the ops that move elements around: cat, reshape, permute,
indexing, split and reductions. One small function per role of `channel_roles`, each taking
the `ChannelFlow` and a node and returning the node's atom map (see `flow_rules`).

    cat        the inputs side by side along the dim
    reshape    the same elements regrouped; a channel dim split in equal parts of a written-in
               size (ShuffleNet's channel shuffle, view(B, 2, C // 2, H, W)) is tied across the
               parts, so every part loses the same channels; any other written-in size fixes
               the channels (ViT's reshape(B, 768, 196) would break once 768 changes)
    permute    the dims reordered (channels-last blocks: ConvNeXt, Swin)
    getitem    the elements indexed; picking channels by position fixes them
    split      chunk into equal parts ties the parts (ShuffleNet); other splits fix
    reduce     mean/amax/sum over dims without channels only
"""

import numpy as np

from .channel_roles import argument, literal, unknown

__all__ = ["cat", "reshape", "permute", "getitem", "split", "reduce"]


def cat(flow, node):
    tensors = argument(node, 0, "tensors")
    dim = argument(node, 1, "dim", 0) % len(flow.shapes[node.name])
    if dim == 0:
        unknown(node, "concatenation along the batch dim")
    parts = []
    for (
        t
    ) in tensors:  # each part's atoms spelled out along the dim, as long as the part
        atoms, length = flow.get(t), flow.shapes[t.name][dim]
        parts.append(np.repeat(atoms, length // atoms.shape[dim], axis=dim))
    others = [p.shape[:dim] + (1,) + p.shape[dim + 1 :] for p in parts]
    grid = list(np.broadcast_shapes(*others))
    parts = [
        np.broadcast_to(p, grid[:dim] + [p.shape[dim]] + grid[dim + 1 :]) for p in parts
    ]
    return flow.compress(np.concatenate(parts, axis=dim))


def reshape(flow, node):
    x = node.args[0]
    in_shape, out_shape = flow.shapes[x.name], flow.shapes[node.name]
    if out_shape[0] != in_shape[0]:
        unknown(node, f"a reshape from {in_shape} to {out_shape} moves the batch dim")
    atoms = np.broadcast_to(flow.get(x), (1, *in_shape[1:])).reshape(
        (1, *out_shape[1:])
    )
    written = [d for d, s in enumerate(_sizes(node)) if d > 0 and literal(s) and s > 1]
    varying = [d for d in range(1, len(out_shape)) if not _constant_along(atoms, d)]
    if any(d in varying for d in written):
        if any(d not in written for d in varying):  # a channel dim split in equal parts
            for d in (d for d in written if d in varying):
                atoms = flow.tie_along(atoms, d)
        else:
            reason = (
                f"node {node.name!r} reshapes them to the fixed size {out_shape[1:]}"
            )
            flow.fix(atoms, reason)
    return flow.compress(atoms)


def permute(flow, node):
    rank = len(flow.shapes[node.name])
    if _name(node.target) == "transpose":
        order = list(range(rank))
        a, b = argument(node, 1, "dim0") % rank, argument(node, 2, "dim1") % rank
        order[a], order[b] = order[b], order[a]
    else:
        rest = node.args[1:] or (node.kwargs.get("dims"),)
        listed = len(rest) == 1 and isinstance(rest[0], (list, tuple))
        order = [d % rank for d in (rest[0] if listed else rest)]
    if order[0] != 0:
        unknown(node, f"permutation {order} moves the batch dim")
    return np.transpose(flow.get(node.args[0]), order)


def getitem(flow, node):
    source, index = node.args
    atoms = flow.get(source)
    if isinstance(atoms, list):  # an element of a tuple (chunk, attention)
        return atoms[index]
    index = index if isinstance(index, tuple) else (index,)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = (
            index[:at]
            + (slice(None),) * (atoms.ndim - len(index) + 1)
            + index[at + 1 :]
        )
    if not index or index[0] != slice(None):
        unknown(node, "indexing that selects from the batch")
    kept, dim = [], 0
    for item in index:
        if item is None:
            kept.append(np.newaxis)
            continue
        if not isinstance(item, (int, slice)):
            unknown(node, f"indexing with {type(item).__name__}")
        if atoms.shape[dim] > 1:
            if item != slice(None):
                flow.fix(atoms, f"node {node.name!r} selects channels by position")
            kept.append(item)
        else:  # one atom along the dim: an int drops it, a slice keeps it
            kept.append(0 if isinstance(item, int) else slice(None))
        dim += 1
    return flow.compress(atoms[tuple(kept)])


def split(flow, node):
    x = node.args[0]
    atoms, shape, parts = flow.get(x), flow.shapes[x.name], flow.shapes[node.name]
    dim = argument(node, 2, "dim", 0) % len(shape)
    if dim == 0:
        unknown(node, "splitting along the batch dim")
    if atoms.shape[dim] == 1:
        return [atoms] * len(parts)
    lengths = [p[dim] for p in parts]
    if _name(node.target) == "chunk" and len(set(lengths)) == 1:
        pieces = np.stack(np.split(atoms, len(parts), dim))  # (parts, ...)
        return [flow.tie_along(pieces, 0)[0]] * len(parts)
    flow.fix(atoms, f"node {node.name!r} splits channels at fixed positions")
    return list(np.split(atoms, np.cumsum(lengths)[:-1], dim))


def reduce(flow, node):
    x = node.args[0]
    atoms, rank = flow.get(x), len(flow.shapes[x.name])
    dims = argument(node, 1, "dim")
    dims = sorted(d % rank for d in ([dims] if isinstance(dims, int) else dims or []))
    if not dims or 0 in dims or any(atoms.shape[d] > 1 for d in dims):
        unknown(
            node, f"a reduction over dims {dims or 'all'}, which touches the channels"
        )
    if not argument(node, 2, "keepdim", False):
        atoms = atoms.reshape([s for d, s in enumerate(atoms.shape) if d not in dims])
    return atoms


# ---------------------------------------------------------------------------------------------


def _sizes(node):
    """The sizes a view or reshape asks for, as written in the trace ((): a flatten)."""
    if node.op == "call_module" or _name(node.target) == "flatten":
        return ()
    if node.op == "call_method":
        sizes = node.args[1:]
    else:
        sizes = node.args[1:2] or [node.kwargs.get("shape")]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = sizes[0]
    return tuple(sizes)


def _constant_along(atoms, dim):
    return atoms.shape[dim] == 1 or bool((atoms == atoms.take([0], axis=dim)).all())


def _name(target):
    return getattr(target, "__name__", target)
