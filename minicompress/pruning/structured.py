"""Structured channel pruning: score the channels, keep the best of each coupled group, and
return a physically smaller model (dense kernels then do less work, unlike zeroed weights).

    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710 (the
    procedure: rank filters, remove the lowest with their feature maps and the next layer's
    matching input channels, fine-tune).

For a group of C channels and amount a, the kept count is

    n_keep = max(min_channels, C - floor(a * C)), rounded up to a multiple of round_to (<= C)

per group (scope="layer"), or one threshold over all groups' scores (scope="global"). A conv
between two pruned groups keeps (1 - a)^2 of its MACs, so MACs fall by about 1 - (1 - a)^2:
a = 0.3 removes about half of them. `prune_channels_to_macs` searches the amount that removes
a given fraction of MACs.

    prune_channels(model, amount, criterion, example_input, ...)         -> smaller model
    prune_channels_to_macs(model, target, criterion, example_input, ...) -> smaller model
    select_channels(graph, scores, amount, scope, min_channels, round_to) -> keep masks
    recalibrate_batchnorm(model, batches)  re-estimates BatchNorm statistics after pruning
"""

import math

import torch
from torch import nn

from .. import _checks, measure
from .criteria import CRITERIA, channel_scores
from .dependency import build_dependency_graph
from .surgery import remove_channels

__all__ = [
    "prune_channels",
    "prune_channels_to_macs",
    "select_channels",
    "recalibrate_batchnorm",
    "SCOPES",
]

SCOPES = ("layer", "global")
# Criteria whose raw scores grow with a layer's fan-in: for a global ranking each group's
# scores are divided by their mean (Torch-Pruning's default normalizer), otherwise the layers
# with the most inputs would never lose a channel. BN scales and random scores are compared raw.
_NORMALIZED = ("l1", "l2", "taylor", "fpgm")


def prune_channels(
    model,
    amount,
    criterion,
    example_input,
    *,
    scope="layer",
    min_channels=1,
    round_to=1,
    batch=None,
    loss_fn=None,
    compensate=False,
    seed=0,
):
    """Remove the least important channels of every prunable group; return a new, smaller model.

    Args:
        model: any `nn.Module` torch.fx can trace (see `build_dependency_graph`); untouched.
        amount: fraction of each group's channels to remove, a float in [0, 1); or a dict
            {layer name: fraction} giving the amount of the group that layer produces (any of
            its source layers may name it; groups no key names keep every channel). The
            output side of the last layer (the classes) is never pruned.
        criterion: "l1", "l2" (filter norms, Li et al. 2017), "bn_scale" (|gamma|, Liu et al.
            2017; groups without BatchNorm are left whole), "taylor" (Molchanov et al. 2019;
            needs `batch`), "fpgm" (He et al. 2019) or "random". See `criteria`.
        example_input: a tensor the model accepts, e.g. (1, C, H, W); used to trace shapes.
        scope: "layer" removes `amount` of every group; "global" removes `amount` of all
            prunable channels together, lowest scores first (mean-normalized per group except
            for "bn_scale" and "random"); a dict `amount` needs "layer".
        min_channels: channels every group keeps at least, an int >= 1.
        round_to: kept counts are rounded up to a multiple of this (8 suits SIMD kernels), >= 1.
        batch, loss_fn: for "taylor": `(inputs, targets)` (or a list of them) and the loss.
        compensate: fold the constant output of removed channels into the next layer
            (`compensation`); exact for channels with zero BatchNorm scale.
        seed: seed of the "random" criterion.

    Returns:
        A new model of the same class with fewer channels.

    Raises:
        TypeError / ValueError: an argument of the wrong type or out of range, an unknown
            criterion or scope, an untraceable model. The caller's model is unchanged.

    Example:
        >>> small = prune_channels(models.build("resnet8"), 0.5, "l1", torch.zeros(1, 1, 28, 28))
        >>> small.layer1[0].conv1.out_channels
        8
    """
    graph, scores = _prepare(
        model,
        amount,
        criterion,
        example_input,
        scope,
        min_channels,
        round_to,
        batch,
        loss_fn,
        seed,
    )
    keep = select_channels(graph, scores, amount, scope, min_channels, round_to)
    return remove_channels(model, graph, keep, compensate=compensate)


def prune_channels_to_macs(
    model,
    target,
    criterion,
    example_input,
    *,
    scope="layer",
    min_channels=1,
    round_to=1,
    batch=None,
    loss_fn=None,
    compensate=False,
    seed=0,
    tolerance=0.005,
):
    """`prune_channels` with the amount found by bisection so that a fraction `target` of the
    MACs (measured by `measure.macs` on `example_input`) is removed.

    Args:
        target: fraction of MACs to remove, a float in (0, 1).
        tolerance: the search stops once the removed fraction is within this of `target`;
            otherwise it returns the closest it found (channel counts are discrete, and
            `round_to` makes the steps coarse).
        The other arguments are those of `prune_channels`.

    Returns:
        The pruned model; its removed MAC fraction is `1 - measure.macs(pruned, x) /
        measure.macs(model, x)`.

    Raises:
        ValueError: as `prune_channels`, or a target that even amount 0.99 cannot reach.
    """
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, float))
        or not 0 < target < 1
    ):
        raise ValueError(f"target must be a float in (0, 1), got {target!r}")
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be a float in (0, 1), got {tolerance!r}")
    graph, scores = _prepare(
        model,
        0.0,
        criterion,
        example_input,
        scope,
        min_channels,
        round_to,
        batch,
        loss_fn,
        seed,
    )

    def prune(amount):
        keep = select_channels(graph, scores, amount, scope, min_channels, round_to)
        return remove_channels(model, graph, keep, compensate=compensate)

    what = f"pruning every group (min_channels={min_channels}, round_to={round_to})"
    return search_macs(prune, model, example_input, target, 0.99, tolerance, what)[1]


def search_macs(prune, model, example_input, target, top, tolerance, what):
    """Bisect the amount in [0, top] at which `prune(amount)` removes a fraction `target` of
    `model`'s MACs (`measure.macs` on `example_input`); the removed fraction must grow with the
    amount. Shared by `prune_channels_to_macs` and `slimming.percent_for_macs`.

    Returns:
        (amount, pruned model) of the closest result; the search stops once it is within
        `tolerance` of `target`, or after 30 halvings.

    Raises:
        ValueError: even `top` removes less than `target - tolerance`; the message names the
            method by `what`.
    """
    dense = measure.macs(model, example_input)

    def removed(amount):
        pruned = prune(amount)
        return pruned, 1 - measure.macs(pruned, example_input) / dense

    pruned, most = removed(top)
    if most < target - tolerance:
        raise ValueError(
            f"{what} removes at most {most:.3f} of the MACs (at {top:.4g}); target {target} "
            "is out of its reach"
        )
    best = (abs(most - target), top, pruned)
    low, high = 0.0, top
    for _ in range(30):
        if best[0] <= tolerance or high - low < 1e-4:
            break
        middle = (low + high) / 2
        pruned, fraction = removed(middle)
        if abs(fraction - target) < best[0]:
            best = (abs(fraction - target), middle, pruned)
        low, high = (low, middle) if fraction >= target else (middle, high)
    return best[1], best[2]


def select_channels(graph, scores, amount, scope="layer", min_channels=1, round_to=1):
    """Keep masks from scores: {group index: bool (size,)}, True = keep, the highest scores.

    Args:
        graph: the `DependencyGraph`.
        scores: {group index: (size,) scores}, e.g. from `criteria.channel_scores`; the
            groups listed are the ones pruned.
        amount, scope, min_channels, round_to: as in `prune_channels` (validated there);
            `amount` may be a dict {layer name: fraction}.

    Ties keep the lower channel index (a stable sort), so the result is deterministic.
    """
    if isinstance(amount, dict):  # per-group amounts; unnamed groups keep every channel
        amounts = _group_amounts(graph, amount)
        scores = {i: s for i, s in scores.items() if i in amounts}
    else:
        amounts = dict.fromkeys(scores, amount)
    sizes = {index: graph.groups[index].size for index in scores}
    floors = {index: min(size, min_channels) for index, size in sizes.items()}
    if scope == "layer":
        counts = {
            index: max(floors[index], size - math.floor(amounts[index] * size))
            for index, size in sizes.items()
        }
    else:  # one threshold: remove the globally lowest, but never below a group's floor
        order = sorted(
            (
                (float(s), index, c)
                for index, group_scores in scores.items()
                for c, s in enumerate(group_scores)
            ),
        )
        budget = math.floor(amount * sum(sizes.values()))
        counts = dict(sizes)
        for _, index, _ in order:
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


def recalibrate_batchnorm(model, batches, device=None):
    """Re-estimate every BatchNorm's running mean and variance on `batches`; in place.

    Removing input channels shifts the statistics of the layers that read them, and BatchNorm
    in eval mode keeps normalising with the old ones, which alone can send a pruned model to
    chance accuracy. Re-estimating them on a few batches, without any training, fixes that
    part: the "adaptive BatchNorm" of Li et al., "EagleEye: Fast Sub-net Evaluation for
    Efficient Neural Network Pruning", ECCV 2020, arXiv:2007.02491.

    Args:
        model: the model; its BatchNorm statistics are reset and replaced by the cumulative
            average over `batches` (momentum None), then the momentum and the model's mode are
            restored. No parameter changes.
        batches: an iterable of `(inputs, targets)` or of input tensors, e.g. a few training
            batches (`itertools.islice(loader, 10)`).
        device: where to run; None keeps the model where it is.

    Returns:
        The same model.
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    momenta = {m: m.momentum for m in norms}
    flags = {m: m.training for m in model.modules()}
    device = device if device is not None else next(model.parameters()).device
    seen = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
        model.train()
        with torch.no_grad():
            for batch in batches:
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(inputs.to(device))
                seen += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)
    if seen == 0:
        raise ValueError("batches is empty: no statistics to estimate")
    return model


# ---------------------------------------------------------------------------------------------


def _prepare(
    model,
    amount,
    criterion,
    example_input,
    scope,
    min_channels,
    round_to,
    batch,
    loss_fn,
    seed,
):
    """Validate the arguments, trace the model and score its channels."""
    fractions = amount.values() if isinstance(amount, dict) else [amount]
    for value in fractions:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"amount must be a float in [0, 1) or a dict of them, got {amount!r}"
            )
        if not 0 <= value < 1:
            raise ValueError(
                f"amount must be a float in [0, 1) or a dict of them, got {amount!r}"
            )
    if isinstance(amount, dict) and scope != "layer":
        raise ValueError(
            f"a dict amount gives each group its own amount: it needs scope='layer', got {scope!r}"
        )
    _checks.check_choice(criterion, "criterion", CRITERIA)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    for name, value in (("min_channels", min_channels), ("round_to", round_to)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    graph = build_dependency_graph(model, example_input)
    if isinstance(amount, dict):
        _group_amounts(
            graph, amount
        )  # unknown names and conflicts fail before any work
    scores = channel_scores(
        model, graph, criterion, batch=batch, loss_fn=loss_fn, seed=seed
    )
    if scope == "global" and criterion in _NORMALIZED:
        scores = {i: s / s.mean() if s.mean() > 0 else s for i, s in scores.items()}
    return graph, scores


def _group_amounts(graph, amount):
    """{group index: fraction} from {layer name: fraction}; a layer names the group it produces."""
    amounts = {}
    for name, value in amount.items():
        layer = graph.layers.get(name)
        if layer is None or layer.kind not in ("conv", "linear"):
            known = [n for n, l in graph.layers.items() if l.kind in ("conv", "linear")]
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
