"""Residual-unit removal ("layer pruning"): remove whole units y = x + f(x), leaving y = x (+ a
folded constant).

The "layer pruning" of the YOLOv3 pruning lineage (tanluren/yolov3-channel-and-layer-pruning,
2019): the unit is a Darknet residual block (1x1 conv, 3x3 conv, add), scored by the mean
|gamma| of the BatchNorm on its last conv; the N lowest go. A network of depth D then runs
D - 2N convolutions, which speeds up any hardware, unlike thinner layers.

A removed unit's branch is replaced by the constant it outputs when its last BatchNorm is
reduced to beta (the activation-offset idea of Ye et al., ICLR 2018, arXiv:1802.00124):
c = act(beta). With `compensate=True` that constant is folded into the layers that read the
unit's output (`compensation.fold_offsets`), exact when gamma = 0 and the readers have no zero
padding. A unit is found in the fx graph as an add of a node x and a branch that starts at x
and is used nowhere else, computed by one submodule (the unit) called once.

    residual_units(graph)                                -> [ResidualUnit], in graph order
    remove_units(model, graph, names, compensate=True)   -> a new model without those units
"""

import copy
from dataclasses import dataclass

from torch import fx, nn

from .. import _checks
from .compensation import apply_folds, channel_constants, fold_offsets
from .dependency import check_graph, require_graph

__all__ = ["ResidualUnit", "residual_units", "remove_units"]


@dataclass(frozen=True)
class ResidualUnit:
    """A submodule computing x + f(x): `name` (its path in the model), `add` and `identity`
    (fx node names of the add and of x), `branch` (the node names of f), `norm` (the
    BatchNorm on f's last layer, whose mean |gamma| scores the unit; None if there is none)."""

    name: str
    add: str
    identity: str
    branch: tuple
    norm: str


def residual_units(graph):
    """The removable residual units of a traced model, in graph order.

    A unit must be a submodule whose whole forward is `x + f(x)`: torchvision's BasicBlock,
    which applies ReLU after the add, is not one (without the block the ReLU would be gone too).
    """
    require_graph(graph)
    nodes = list(graph.graph_module.graph.nodes)
    units = []
    for node in nodes:
        if graph.roles[node.name] != "add" or len(node.args) != 2:
            continue
        a, b = node.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue
        for identity, out in ((a, b), (b, a)):
            unit = _unit(graph, nodes, node, identity, out)
            if unit is not None:
                units.append(unit)
                break
    return units


def remove_units(model, graph, names, compensate=True):
    """Return a copy of `model` with the residual units `names` replaced by `nn.Identity`.

    Args:
        model: the model `graph` was built from; not modified.
        graph: its `DependencyGraph`.
        names: module paths of units from `residual_units(graph)`.
        compensate: fold each removed branch's constant output act(beta) into the layers
            downstream of its add (through later adds and pooling, up to the first conv,
            linear or BatchNorm). On by default, unlike `remove_channels`: units are chosen
            for their near-zero BatchNorm scales, where the fold is exact.

    Raises:
        TypeError: a model, graph or names of the wrong kind.
        ValueError: a graph built from another model, a name that is not a residual unit;
            with compensate=True, a constant that would have to pass a nonlinearity to reach
            a layer.
    """
    check_graph(model, graph)
    names = _checks.check_names(names, "names")
    compensate = _checks.check_bool(compensate, "compensate")
    found = {unit.name: unit for unit in residual_units(graph)}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(
            f"names {unknown} are not residual units of the model; its units are {list(found)}"
        )
    removed = [found[n] for n in names]
    folds = {}
    if compensate:
        values = channel_constants(graph)
        offsets = {u.add: values[_branch_output(graph, u)] for u in removed}
        skip = {n for u in removed for n in u.branch}
        folds = fold_offsets(graph, offsets, skip)
    pruned = copy.deepcopy(model)
    apply_folds(pruned, folds)
    for unit in removed:
        parent, _, child = unit.name.rpartition(".")
        setattr(
            pruned.get_submodule(parent) if parent else pruned, child, nn.Identity()
        )
    return pruned


# ---------------------------------------------------------------------------------------------


def _unit(graph, nodes, add, identity, out):
    """The unit add = identity + out, or None if `out` is not a branch of `identity` computed
    by a submodule of its own."""
    branch = _between(identity, out)
    if branch is None:
        return None
    inside = branch | {add.name}
    for node in nodes:  # the branch talks only to itself, the identity and the add
        if node.name in branch:
            if any(user.name not in inside for user in node.users):
                return None
            if any(
                arg.name not in inside and arg is not identity for arg in _inputs(node)
            ):
                return None
    path = _module_path(add)
    if not path:
        return None
    members = {n.name for n in nodes if path in _module_paths(n)}
    if members != inside or path in _module_paths(identity):
        return None  # the submodule holds more (or less) than x + f(x)
    norm = _last_norm(graph, out)
    return ResidualUnit(path, add.name, identity.name, tuple(sorted(branch)), norm)


def _between(identity, out):
    """Names of the nodes on paths from `identity` (excluded) to `out` (included), or None
    when `out` does not depend on `identity`."""
    found, stack, seen, reaches = set(), [out], set(), False
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node is identity:
            reaches = True
            continue
        if node.op == "placeholder":
            return None  # a path that bypasses the identity: not a branch of it
        found.add(node.name)
        stack.extend(_inputs(node))
    return found if reaches else None


def _inputs(node):
    found = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _module_paths(node):
    return [path for path, _ in node.meta.get("nn_module_stack", {}).values()]


def _module_path(add):
    paths = _module_paths(add)
    return paths[-1] if paths else None


def _last_norm(graph, out):
    node = out
    while graph.roles[node.name] in ("pointwise", "spatial"):
        node = node.args[0]
    return node.target if graph.roles[node.name] == "norm" else None


def _branch_output(graph, unit):
    add = next(n for n in graph.graph_module.graph.nodes if n.name == unit.add)
    return next(a.name for a in add.args if a.name != unit.identity)
