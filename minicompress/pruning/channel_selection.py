"""Which channels to keep, from their scores: per group (scope "layer") or under one threshold
over all groups (scope "global"), with a floor and a rounding of the kept counts.

For a group of C channels and amount a, the kept count is

    n_keep = max(min_channels, C - floor(a * C)), rounded up to a multiple of round_to (<= C)

Entry point: `select_channels(graph, scores, amount, scope, min_channels, round_to)`.
"""

import math
import numbers

import torch

from .. import _checks
from .dependency import DependencyGraph
from .layer_kinds import PRODUCERS

__all__ = ["select_channels", "SCOPES"]

SCOPES = ("layer", "global")


def select_channels(graph, scores, amount, scope="layer", min_channels=1, round_to=1):
    """Keep masks from scores: {group index: bool (size,)}, True = keep, the highest scores.

    Args:
        graph: the `DependencyGraph`.
        scores: {group index: (size,) scores}, e.g. from `criteria.channel_scores`; the
            groups listed are the ones pruned (prunable groups only).
        amount: fraction of each group's channels to remove, a float in [0, 1), or a dict
            {layer name: fraction} naming the group a layer produces (scope "layer" only;
            groups no key names keep every channel).
        scope: "layer" (the same fraction of every group) or "global" (one threshold over all
            the scores, lowest first, never below a group's floor).
        min_channels: channels every group keeps at least, an int >= 1.
        round_to: kept counts are rounded up to a multiple of this, an int >= 1.

    Ties keep the lower channel index (a stable sort), so the result is deterministic.

    Raises:
        TypeError / ValueError: a graph, scores, amount or option of the wrong kind or value;
            scores for a group the graph does not have, of the wrong size, or not finite.

    Example:
        >>> net = models.build("lenet5")
        >>> graph = build_dependency_graph(net, torch.zeros(1, 1, 28, 28))
        >>> scores = {graph.group_of("conv1").index: torch.tensor([6.0, 1, 5, 2, 4, 3])}
        >>> select_channels(graph, scores, 0.5)[graph.group_of("conv1").index]
        tensor([ True, False,  True, False,  True, False])
    """
    if not isinstance(graph, DependencyGraph):
        raise TypeError(f"graph must be a DependencyGraph, got {type(graph).__name__}")
    amounts = check_amount(graph, amount, scope)
    min_channels = _checks.check_int(min_channels, "min_channels", low=1)
    round_to = _checks.check_int(round_to, "round_to", low=1)
    scores = _check_scores(graph, scores)
    if amounts is not None:  # per-group amounts; unnamed groups keep every channel
        scores = {i: s for i, s in scores.items() if i in amounts}
    else:
        amounts = dict.fromkeys(scores, float(amount))
    sizes = {index: graph.groups[index].size for index in scores}
    floors = {index: min(size, min_channels) for index, size in sizes.items()}
    if scope == "layer":
        counts = {
            i: max(floors[i], n - math.floor(amounts[i] * n)) for i, n in sizes.items()
        }
    else:  # one threshold: remove the globally lowest, but never below a group's floor
        ranked = sorted(
            (float(s), i, c) for i, g in scores.items() for c, s in enumerate(g)
        )
        budget = math.floor(amount * sum(sizes.values()))
        counts = dict(sizes)
        for _, index, _ in ranked:
            if budget == 0:
                break
            if counts[index] > floors[index]:
                counts[index] -= 1
                budget -= 1
    keep = {}
    for index, group_scores in scores.items():
        count = min(sizes[index], math.ceil(counts[index] / round_to) * round_to)
        ranked = torch.argsort(group_scores, descending=True, stable=True)
        mask = torch.zeros(sizes[index], dtype=torch.bool)
        mask[ranked[:count]] = True
        keep[index] = mask
    return keep


def check_amount(graph, amount, scope):
    """Check `amount` and `scope` (as `select_channels` takes them); returns {group index:
    fraction} for a dict amount, None for one fraction. `graph` may be None to check only
    the values (the layer names then wait for the graph)."""
    _checks.check_choice(scope, "scope", SCOPES)
    if not isinstance(amount, dict):
        _fraction(amount, amount)
        return None
    for name, value in amount.items():
        _checks.check_names(name, "amount's keys")
        _fraction(value, amount)
    if scope != "layer":
        raise ValueError(
            f"a dict amount gives each group its own amount: it needs scope='layer', got {scope!r}"
        )
    return None if graph is None else _group_amounts(graph, amount)


# ---------------------------------------------------------------------------------------------


def _group_amounts(graph, amount):
    """{group index: fraction} from {layer name: fraction}; a layer names the group it produces."""
    amounts = {}
    for name, value in amount.items():
        layer = graph.layers.get(name)
        if layer is None or layer.kind not in PRODUCERS:
            known = [n for n, layer in graph.layers.items() if layer.kind in PRODUCERS]
            raise ValueError(
                f"amount names {name!r}, which is not a conv or linear layer; layers: {known}"
            )
        group = graph.group_of(name)
        if not group.prunable:
            raise ValueError(
                f"amount names {name!r}, whose channels cannot be pruned: {group.reason}"
            )
        if amounts.get(group.index, value) != value:
            raise ValueError(
                f"amount gives group {group.index} (sources {group.sources}) two amounts, "
                f"{amounts[group.index]} and {value}"
            )
        amounts[group.index] = value
    return amounts


def _fraction(value, amount):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"amount must be a float in [0, 1) or a dict of them, got {amount!r}"
        )
    if not 0 <= value < 1:  # also refuses NaN
        raise ValueError(
            f"amount must be a float in [0, 1) or a dict of them, got {amount!r}"
        )


def _check_scores(graph, scores):
    if not isinstance(scores, dict):
        raise TypeError(
            f"scores must be a dict {{group index: tensor}}, got {type(scores).__name__}"
        )
    for index, values in scores.items():
        if not isinstance(index, int) or not 0 <= index < len(graph.groups):
            raise ValueError(
                f"scores names group {index!r}, which the graph does not have"
            )
        group = graph.groups[index]
        if not group.prunable:
            raise ValueError(
                f"scores names group {index}, which cannot lose channels: {group.reason}"
            )
        _checks.check_tensor(values, f"scores[{index}]", dims=1, finite=True)
        if len(values) != group.size:
            raise ValueError(
                f"scores[{index}] must have shape ({group.size},), got {tuple(values.shape)}"
            )
    return scores
