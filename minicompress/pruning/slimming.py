"""Network Slimming and its six YOLO-lineage variants: sparsity training on BatchNorm scales,
then one global |gamma| threshold decides which channels (or residual units) go.

    Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017,
    arXiv:1708.06519.
    Ye et al., "Rethinking the Smaller-Norm-Less-Informative Assumption in Channel Pruning of
    Convolution Layers", ICLR 2018, arXiv:1802.00124 (the activation-offset compensation).
    Zhang et al., "SlimYOLOv3", arXiv:1907.11093 (the mask union across shortcuts).

    training:   L = L_task + s * sum |gamma|    ->   grad(gamma) += s * sign(gamma)  (bn_sparsity.py)
    threshold:  t = sorted(|gamma| of the ranked layers)[floor(N * percent)];  keep |gamma| >= t

The variants differ in which BatchNorm layers are ranked and how residual partners (the convs
whose outputs a residual add sums, one `ChannelGroup`) share a mask:

    normal         rank only convs that touch no residual add; residual groups stay whole
    shortcut       every conv of a residual group takes the mask of the group's first conv
                   (the stage-entry conv); the others' gammas are not ranked
    slim           rank every conv; a residual group keeps the union (OR) of its members'
                   masks; each layer keeps at least max(1, int(C * layer_keep)) channels
    regular        normal, then each kept count rounded up to a multiple of round_to (8)
    layer          remove the `units` residual units whose last BatchNorm has the lowest mean
                   |gamma| (see `layer_pruning`)
    layer_channel  slim, then layer on the result

The percent is a fraction of the *ranked* channels, so the same number prunes different
amounts under different variants. Sources (tanluren/yolov3-channel-and-layer-pruning,
coldlarry/YOLOv3-complete-pruning, SpursLipu/YOLOv3v4-ModelCompression) keep |gamma| > t for
slim and round regular counts to powers of two or to multiples of 8 or 32; we use >= t
everywhere and multiples of `round_to`.

    (sparsity training, the first step, is `bn_sparsity.BNSparsity`, a train.fit callback)
    plan_slim(model, percent, variant, example_input, ...) -> SlimPlan (changes nothing)
    apply_plan(model, plan, example_input, compensate=True) -> smaller model
    slim(model, percent, variant, example_input, compensate=True, ...) -> smaller model
    percent_for_macs(model, target, variant, example_input, ...) -> the percent for a MAC target
"""

import math
from dataclasses import dataclass, field

import torch

from .. import measure
from .dependency import build_dependency_graph
from .layer_pruning import remove_units, residual_units
from .surgery import remove_channels

__all__ = [
    "VARIANTS",
    "percent_for_macs",
    "SlimPlan",
    "plan_slim",
    "apply_plan",
    "slim",
]

VARIANTS = ("normal", "shortcut", "slim", "regular", "layer", "layer_channel")
_DEFAULT_ROUND_TO, _DEFAULT_LAYER_KEEP = 8, 0.01


@dataclass
class SlimPlan:
    """What `slim` will do: the threshold over the ranked |gamma|, the keep masks per channel
    group ({group index: bool mask}), and the residual units to remove with their scores."""

    variant: str
    percent: float
    threshold: float = None
    # normal and shortcut: the largest percent that empties no layer (None for the others)
    safe_percent: float = None
    # the BatchNorm layers whose gammas were ranked, and the residual units to remove
    # (lowest score first)
    ranked: list = field(default_factory=list)
    keep: dict = field(default_factory=dict)
    units: list = field(default_factory=list)
    unit_scores: dict = field(default_factory=dict)


def plan_slim(
    model,
    percent,
    variant,
    example_input,
    *,
    units=None,
    round_to=None,
    layer_keep=None,
):
    """Decide what `slim` removes, without changing anything. Arguments as in `slim`."""
    _check(percent, variant, units, round_to, layer_keep)
    graph = build_dependency_graph(model, example_input)
    return _plan(model, graph, percent, variant, units, round_to, layer_keep)


def slim(
    model,
    percent,
    variant,
    example_input,
    compensate=True,
    *,
    units=None,
    round_to=None,
    layer_keep=None,
):
    """Prune a sparsity-trained model by its BatchNorm scales; return a new, smaller model.

    Args:
        model: a model with BatchNorm after its convs, torch.fx-traceable; not modified.
        percent: fraction of the ranked channels to remove, a float in [0, 1) (see the module
            docstring for which channels each variant ranks). Must be 0 for "layer".
        variant: one of `VARIANTS`.
        example_input: a tensor the model accepts, e.g. (1, C, H, W).
        compensate: fold act(beta) of removed channels (and removed units) into the layers
            that read them (Ye et al. 2018). Exact for gamma = 0, except at zero-padded borders.
        units: for "layer" and "layer_channel" only: how many residual units to remove, >= 1.
        round_to: for "regular" only: kept counts are multiples of it (default 8).
        layer_keep: for "slim" and "layer_channel" only: the per-layer floor as a fraction of
            the layer's channels (default 0.01; SlimYOLOv3 used 0.1), in [0, 1].

    Returns:
        A new model of the same class; residual units removed by "layer" become nn.Identity.

    Example:
        >>> sparse = ...  # a darknet_tiny trained with BNSparsity
        >>> small = slim(sparse, 0.5, "slim", torch.zeros(1, 1, 28, 28))
        >>> measure.macs(small, x) < measure.macs(sparse, x)
        True

    Raises:
        TypeError / ValueError: arguments out of range; an argument the variant does not use;
            a percent that would empty a layer under "normal", "shortcut" or "regular"
            (the message names the layer and the largest safe percent); a variant that needs
            residual units or groups on a model without them; a model without BatchNorm.
            The caller's model is unchanged.
    """
    plan = plan_slim(
        model,
        percent,
        variant,
        example_input,
        units=units,
        round_to=round_to,
        layer_keep=layer_keep,
    )
    return apply_plan(model, plan, example_input, compensate)


def apply_plan(model, plan, example_input, compensate=True):
    """Carry out a `SlimPlan` on `model` (the model it was made for); return the new model."""
    graph = build_dependency_graph(model, example_input)
    if plan.keep:
        model = remove_channels(model, graph, plan.keep, compensate=compensate)
        if plan.units:
            graph = build_dependency_graph(model, example_input)
    if plan.units:
        model = remove_units(model, graph, plan.units, compensate=compensate)
    return model


def percent_for_macs(
    model,
    target,
    variant,
    example_input,
    *,
    round_to=None,
    layer_keep=None,
    tolerance=0.01,
):
    """The percent at which channel variant `variant` removes a fraction `target` of the MACs
    (measured by `measure.macs` on `example_input`), found by bisection; to compare variants
    at equal cost, since one percent prunes different amounts under each.

    Args:
        target: fraction of MACs to remove, in (0, 1).
        variant: "normal", "shortcut", "slim" or "regular".
        tolerance: stop once the removed fraction is within this of `target`.

    Raises:
        ValueError: `target` is beyond what the variant can remove (the message gives its
            maximum), or a variant without a percent ("layer", "layer_channel").
    """
    if variant not in ("normal", "shortcut", "slim", "regular"):
        raise ValueError(
            f"variant must be a channel variant (normal, shortcut, slim, regular), got {variant!r}"
        )
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, float))
        or not 0 < target < 1
    ):
        raise ValueError(f"target must be a float in (0, 1), got {target!r}")
    _check(0.0, variant, None, round_to, layer_keep)
    graph = build_dependency_graph(model, example_input)
    dense = measure.macs(model, example_input)
    top = (
        _plan(model, graph, 0.0, variant, None, round_to, layer_keep).safe_percent
        or 0.999
    )

    def removed(percent):
        plan = _plan(model, graph, percent, variant, None, round_to, layer_keep)
        pruned = remove_channels(model, graph, plan.keep)
        return 1 - measure.macs(pruned, example_input) / dense

    most = removed(top)
    if most < target - tolerance:
        raise ValueError(
            f"variant {variant!r} removes at most {most:.3f} of the MACs (percent {top}); "
            f"target {target} is out of its reach"
        )
    low, high = 0.0, top
    best = (abs(most - target), top)
    for _ in range(30):
        if best[0] <= tolerance or high - low < 1e-4:
            break
        middle = (low + high) / 2
        fraction = removed(middle)
        best = min(best, (abs(fraction - target), middle))
        low, high = (low, middle) if fraction >= target else (middle, high)
    return best[1]


# ---------------------------------------------------------------------------------------------


def _check(percent, variant, units, round_to, layer_keep):
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}"
        )
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise TypeError(f"percent must be a float in [0, 1), got {percent!r}")
    if not 0 <= percent < 1:
        raise ValueError(f"percent must be a float in [0, 1), got {percent!r}")
    if variant == "layer" and percent != 0:
        raise ValueError(
            f"variant 'layer' removes whole residual units (set units=N); percent must be 0, got {percent}"
        )
    uses = {
        "units": variant in ("layer", "layer_channel"),
        "round_to": variant == "regular",
        "layer_keep": variant in ("slim", "layer_channel"),
    }
    for name, value in (
        ("units", units),
        ("round_to", round_to),
        ("layer_keep", layer_keep),
    ):
        if value is not None and not uses[name]:
            raise ValueError(
                f"{name} is not used by variant {variant!r}; leave it None"
            )
    if uses["units"] and (
        isinstance(units, bool) or not isinstance(units, int) or units < 1
    ):
        raise ValueError(f"variant {variant!r} needs units, an int >= 1, got {units!r}")
    if round_to is not None and (
        isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1
    ):
        raise ValueError(f"round_to must be an int >= 1, got {round_to!r}")
    if layer_keep is not None and (
        isinstance(layer_keep, bool)
        or not isinstance(layer_keep, (int, float))
        or not 0 <= layer_keep <= 1
    ):
        raise ValueError(f"layer_keep must be a float in [0, 1], got {layer_keep!r}")


def _plan(model, graph, percent, variant, units, round_to, layer_keep):
    plan = SlimPlan(variant, float(percent))
    if variant != "layer":
        _channel_plan(
            model, graph, plan, round_to or _DEFAULT_ROUND_TO, _default(layer_keep)
        )
    if variant in ("layer", "layer_channel"):
        _unit_plan(graph, plan, units)
    return plan


def _default(layer_keep):
    return _DEFAULT_LAYER_KEEP if layer_keep is None else layer_keep


def _channel_plan(model, graph, plan, round_to, layer_keep):
    variant = "slim" if plan.variant == "layer_channel" else plan.variant
    single, residual = [], []  # groups whose every source has its own BatchNorm
    for group in graph.groups:
        norms = [graph.layers[s].norm for s in group.sources]
        aligned = all(
            torch.equal(graph.layers[s].out_channel, torch.arange(group.size))
            for s in group.sources
        )
        if group.prunable and norms and all(norms) and aligned:
            (single if len(norms) == 1 else residual).append((group, norms))
    if not single and not residual:
        raise ValueError(
            "slimming ranks BatchNorm scales: no prunable conv of the model has a BatchNorm right after it"
        )
    if variant in ("shortcut", "slim") and not residual:
        raise ValueError(
            f"variant {variant!r} shares masks across residual adds, and the model has none "
            "(use 'normal' or 'regular')"
        )
    gamma = {
        name: graph.graph_module.get_submodule(name).weight.detach().abs()
        for g, ns in single + residual
        for name in ns
    }
    ranked = [ns[0] for _, ns in single]
    if variant == "shortcut":
        ranked += [
            ns[0] for _, ns in residual
        ]  # the root: the group's first conv in the graph
    elif variant == "slim":
        ranked += [n for _, ns in residual for n in ns]
    values = torch.sort(torch.cat([gamma[n] for n in ranked])).values
    threshold = float(
        values[min(math.floor(len(values) * plan.percent), len(values) - 1)]
    )
    if plan.percent == 0:
        threshold = float(values[0])  # keep everything
    plan.threshold, plan.ranked = threshold, ranked
    _check_empty(gamma, ranked, values, plan, variant)
    for group, norms in single + residual:
        if len(norms) > 1 and variant in ("normal", "regular"):
            continue  # residual groups stay whole
        if len(norms) > 1 and variant == "shortcut":
            mask = gamma[norms[0]] >= threshold
        elif variant == "slim":
            mask = torch.zeros(group.size, dtype=torch.bool)
            for name in norms:  # the union of the members' masks, each with its floor
                own = gamma[name] >= threshold
                floor = max(1, int(len(own) * layer_keep))
                if own.sum() < floor:
                    own[gamma[name].argsort(descending=True, stable=True)[:floor]] = (
                        True
                    )
                mask |= own
        else:
            mask = gamma[norms[0]] >= threshold
            if variant == "regular":
                count = int(mask.sum())
                count = min(
                    group.size, max(round_to, math.ceil(count / round_to) * round_to)
                )
                mask = torch.zeros(group.size, dtype=torch.bool)
                mask[gamma[norms[0]].argsort(descending=True, stable=True)[:count]] = (
                    True
                )
        plan.keep[group.index] = mask


def _check_empty(gamma, ranked, values, plan, variant):
    # Any threshold above the smallest per-layer maximum empties that layer. With k ranked
    # values below it, percents with floor(N * percent) <= k are safe: k / N is the largest.
    safe_t = min(float(gamma[n].max()) for n in ranked)
    plan.safe_percent = int((values < safe_t).sum()) / len(values)
    safe = (
        math.floor(plan.safe_percent * 1e4) / 1e4
    )  # printed rounded down, so still safe
    if variant in ("slim", "regular"):
        plan.safe_percent = (
            None  # the per-layer floor (slim) and round_to (regular) prevent it
        )
        return
    emptied = [n for n in ranked if gamma[n].max() < plan.threshold]
    if emptied:
        name = emptied[0]
        raise ValueError(
            f"percent {plan.percent} would remove every channel of {name!r} (its largest |gamma| "
            f"{float(gamma[name].max()):.4g} is below the threshold {plan.threshold:.4g}); the "
            f"largest safe percent for variant {variant!r} is {safe:.4f}"
        )


def _unit_plan(graph, plan, units):
    found = [u for u in residual_units(graph) if u.norm is not None]
    if not found:
        raise ValueError(
            f"variant {plan.variant!r} removes residual units (a submodule computing x + f(x) "
            "with a BatchNorm on f's last conv), and the model has none"
        )
    if units > len(found):
        raise ValueError(
            f"units={units} but the model has only {len(found)} residual units"
        )
    scores = {}
    for unit in found:
        gamma = graph.graph_module.get_submodule(unit.norm).weight.detach().abs()
        group = graph.layers[unit.norm]
        keep = plan.keep.get(int(group.out_group[0]))
        if (
            keep is not None
        ):  # layer_channel scores the unit on its channels that remain
            gamma = gamma[keep[group.out_channel]]
        scores[unit.name] = float(gamma.mean())
    ranking = sorted(scores, key=lambda name: (scores[name], name))
    plan.units, plan.unit_scores = ranking[:units], scores
