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
    search_macs(prune, model, example_input, target, ...)  the MAC-target bisection, shared
                                                           with slimming.percent_for_macs
(`select_channels` and `recalibrate_batchnorm` live in `channel_selection` and
`recalibration`, and are importable from here too.)
"""

from .. import _checks, measure
from .channel_selection import SCOPES, check_amount, select_channels
from .criteria import CRITERIA, channel_scores
from .dependency import build_dependency_graph
from .recalibration import recalibrate_batchnorm
from .surgery import remove_channels

__all__ = [
    "prune_channels",
    "prune_channels_to_macs",
    "search_macs",
    "select_channels",
    "recalibrate_batchnorm",
    "SCOPES",
]
# Criteria whose raw scores grow with a layer's fan-in: for a global ranking each group's
# scores are divided by their mean (Torch-Pruning's default normalizer), otherwise the layers
# with the most inputs would never lose a channel. BN scales and random scores are compared raw.
_NORMALIZED = ("l1", "l2", "taylor", "fpgm")


def prune_channels(
    model, amount, criterion, example_input, *,
    scope="layer", min_channels=1, round_to=1, compensate=False,
    batch=None, loss_fn=None, seed=0,  # for the "taylor" and "random" criteria
):  # fmt: skip
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
        scope: "layer" (default) removes `amount` of every group; "global" removes `amount`
            of all prunable channels together, lowest scores first (mean-normalized per group
            except for "bn_scale" and "random"); a dict `amount` needs "layer". The default
            differs from `prune_unstructured`'s "global" on purpose: filter scores of
            different layers are not comparable without a normalization, and Li et al. prune
            each layer by its own ranking.
        min_channels: channels every group keeps at least, an int >= 1.
        round_to: kept counts are rounded up to a multiple of this (8 suits SIMD kernels), >= 1.
        batch, loss_fn: for "taylor": `(inputs, targets)` (or a list of them) and the loss.
        compensate: fold the constant output of removed channels into the next layer
            (`compensation`); exact for channels with zero BatchNorm scale. Off by default,
            unlike `slim`: channels chosen by a filter norm are rarely constant, so the fold
            is an approximation there.
        seed: seed of the "random" criterion.

    Returns:
        A new model of the same class with fewer channels.

    Raises:
        TypeError / ValueError: an argument of the wrong type or out of range, an unknown
            criterion or scope, a layer name in `amount` that is not a conv or linear layer,
            an untraceable model or a node the graph cannot follow (named), NaN or inf
            weights. The caller's model is unchanged.

    Example:
        >>> small = prune_channels(models.build("resnet8"), 0.5, "l1", torch.zeros(1, 1, 28, 28))
        >>> small.layer1[0].conv1.out_channels
        8
    """
    _check_options(amount, scope, min_channels, round_to)
    graph, scores = _scores(
        model, criterion, example_input, amount, scope, batch, loss_fn, seed
    )
    keep = select_channels(graph, scores, amount, scope, min_channels, round_to)
    return remove_channels(model, graph, keep, compensate=compensate)


def prune_channels_to_macs(
    model, target, criterion, example_input, *,
    scope="layer", min_channels=1, round_to=1, compensate=False,
    batch=None, loss_fn=None, seed=0, tolerance=0.005,
):  # fmt: skip
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
    target = _checks.check_real(target, "target", 0, 1, low_open=True, high_open=True)
    tolerance = _checks.check_real(
        tolerance, "tolerance", 0, 1, low_open=True, high_open=True
    )
    compensate = _checks.check_bool(compensate, "compensate")
    _check_options(0.0, scope, min_channels, round_to)
    graph, scores = _scores(
        model, criterion, example_input, 0.0, scope, batch, loss_fn, seed
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
    _checks.check_callable(prune, "prune")
    target = _checks.check_real(target, "target", 0, 1, low_open=True, high_open=True)
    top = _checks.check_real(top, "top", 0, 1, low_open=True)
    tolerance = _checks.check_real(
        tolerance, "tolerance", 0, 1, low_open=True, high_open=True
    )
    if not isinstance(what, str):
        raise TypeError(f"what must be a str describing the method, got {what!r}")
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


def _check_options(amount, scope, min_channels, round_to):
    """The checks that need no model, before the model is traced."""
    check_amount(None, amount, scope)
    _checks.check_int(min_channels, "min_channels", low=1)
    _checks.check_int(round_to, "round_to", low=1)


def _scores(model, criterion, example_input, amount, scope, batch, loss_fn, seed):
    """Trace the model and score its channels (nothing is changed)."""
    _checks.check_module(model)
    _checks.check_choice(criterion, "criterion", CRITERIA)
    _checks.check_tensor(example_input, "example_input", finite=True)
    graph = build_dependency_graph(model, example_input)
    check_amount(
        graph, amount, scope
    )  # unknown names and conflicts fail before any work
    scores = channel_scores(
        model, graph, criterion, batch=batch, loss_fn=loss_fn, seed=seed
    )
    if scope == "global" and criterion in _NORMALIZED:
        scores = {i: s / s.mean() if s.mean() > 0 else s for i, s in scores.items()}
    return graph, scores
