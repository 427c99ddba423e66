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
whose outputs a residual add sums, one `ChannelGroup`) share a mask; each is one plan function
in `slim_variants` (normal, shortcut, slim, regular, layer, layer_channel). The percent is a
fraction of the *ranked* channels, so the same number prunes different amounts under
different variants; `percent_for_macs` finds the percent that removes a given share of MACs.

    (sparsity training, the first step, is `bn_sparsity.BNSparsity`, a train.fit callback)
    plan_slim(model, percent, variant, example_input, ...) -> SlimPlan (changes nothing)
    apply_plan(model, plan, example_input, compensate=True) -> smaller model
    slim(model, percent, variant, example_input, compensate=True, ...) -> smaller model
    percent_for_macs(model, target, variant, example_input, ...) -> the percent for a MAC target
"""

import torch

from .. import _checks
from .criteria import bn_scale_scores
from .dependency import build_dependency_graph, graph_of_copy, require_graph
from .unit_removal import remove_units, residual_units
from .slim_variants import VARIANTS, BNScales, SlimPlan
from .structured import search_macs
from .surgery import remove_channels

__all__ = [
    "VARIANTS",
    "percent_for_macs",
    "SlimPlan",
    "plan_slim",
    "apply_plan",
    "slim",
    "bn_scales",
]

# The options each variant takes; any other is an error rather than silently unused.
_OPTIONS = {
    "normal": (),
    "shortcut": (),
    "slim": ("layer_keep",),
    "regular": ("round_to",),
    "layer": ("units",),
    "layer_channel": ("units", "layer_keep"),
}
_CHANNEL_VARIANTS = ("normal", "shortcut", "slim", "regular")


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
    """Decide what `slim` removes, without changing anything. Arguments as in `slim`.

    Example:
        >>> plan = plan_slim(models.build("resnet8"), 0.3, "normal", torch.zeros(1, 1, 28, 28))
        >>> plan.variant, len(plan.ranked)
        ('normal', 3)
    """
    percent, options = _check(percent, variant, units, round_to, layer_keep)
    graph = build_dependency_graph(model, example_input)
    return VARIANTS[variant](bn_scales(graph), percent, **options)


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
        variant: a name from `VARIANTS`.
        example_input: a tensor the model accepts, e.g. (1, C, H, W).
        compensate: fold act(beta) of removed channels (and removed units) into the layers
            that read them (Ye et al. 2018); exact for gamma = 0, except at zero-padded
            borders. On by default, unlike `prune_channels`: slimming removes channels whose
            gamma sparsity training drove to zero, which is where the fold is exact.
        units: for "layer" and "layer_channel" only: how many residual units to remove, >= 1.
        round_to: for "regular" only: kept counts are multiples of it (default 8), >= 1.
        layer_keep: for "slim" and "layer_channel" only: the per-layer floor as a fraction of
            the layer's channels (default 0.01; SlimYOLOv3 used 0.1), in [0, 1].

    Returns:
        A new model of the same class; residual units removed by "layer" become nn.Identity.

    Raises:
        TypeError / ValueError: arguments out of range; an argument the variant does not use;
            a percent that would empty a layer under "normal" or "shortcut" (the message names
            the layer and the largest safe percent); a variant that needs residual units or
            groups on a model without them; a model without BatchNorm; NaN or inf BatchNorm
            scales. The caller's model is unchanged.

    Example:
        >>> net, x = models.DarknetTiny(stem=8, widths=(16,), units=(2,)), torch.zeros(1, 1, 8, 8)
        >>> for bn in net.modules():  # scales spread as after sparsity training
        ...     _ = torch.nn.init.uniform_(bn.weight) if isinstance(bn, torch.nn.BatchNorm2d) else 0
        >>> small = slim(net, 0.5, "slim", x)
        >>> measure.macs(small, x) < measure.macs(net, x)
        True
    """
    percent, options = _check(percent, variant, units, round_to, layer_keep)
    compensate = _checks.check_bool(compensate, "compensate")
    graph = build_dependency_graph(model, example_input)  # the one trace of the call
    plan = VARIANTS[variant](bn_scales(graph), percent, **options)
    return _apply(model, graph, plan, example_input, compensate)


def apply_plan(model, plan, example_input, compensate=True):
    """Carry out a `SlimPlan` on `model` (the model it was made for); return the new model.

    Raises:
        TypeError: `plan` is not a `SlimPlan`, or `compensate` not a bool.
        ValueError: the plan's keep masks do not fit the model's channel groups.
    """
    if not isinstance(plan, SlimPlan):
        raise TypeError(
            f"plan must be a SlimPlan from plan_slim, got {type(plan).__name__}"
        )
    compensate = _checks.check_bool(compensate, "compensate")
    graph = build_dependency_graph(model, example_input)
    return _apply(model, graph, plan, example_input, compensate)


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
        round_to, layer_keep: as in `slim`, for the variants that take them.
        tolerance: stop once the removed fraction is within this of `target`, in (0, 1).

    Raises:
        ValueError: `target` is beyond what the variant can remove (the message gives its
            maximum), or a variant without a percent ("layer", "layer_channel").

    Example:
        >>> net, x = models.DarknetTiny(stem=8, widths=(16,), units=(2,)), torch.zeros(1, 1, 8, 8)
        >>> for bn in net.modules():  # scales spread as after sparsity training
        ...     _ = torch.nn.init.uniform_(bn.weight) if isinstance(bn, torch.nn.BatchNorm2d) else 0
        >>> 0 < percent_for_macs(net, 0.3, "slim", x) < 1
        True
    """
    _checks.check_choice(variant, "variant", _CHANNEL_VARIANTS)
    target = _checks.check_real(
        target, "target", low=0, high=1, low_open=True, high_open=True
    )
    tolerance = _checks.check_real(
        tolerance, "tolerance", 0, 1, low_open=True, high_open=True
    )
    _, options = _check(0.0, variant, None, round_to, layer_keep)
    graph = build_dependency_graph(model, example_input)
    scales = bn_scales(graph)
    top = VARIANTS[variant](scales, 0.0, **options).safe_percent or 0.999

    def prune(percent):
        keep = VARIANTS[variant](scales, percent, **options).keep
        return remove_channels(model, graph, keep)

    what = f"variant {variant!r}"
    return search_macs(prune, model, example_input, target, top, tolerance, what)[0]


def bn_scales(graph):
    """The `BNScales` of the model `graph` describes: the prunable groups whose every producing
    conv has a BatchNorm right after it (and reads its channels in order), the
    `criteria.bn_scale_scores` of those BatchNorms, and the residual units with theirs.

    Raises:
        ValueError: a BatchNorm scale is NaN or inf.
    """
    require_graph(graph)
    groups = {}
    for group in graph.groups:
        norms = [graph.layers[s].norm for s in group.sources]
        aligned = all(
            torch.equal(graph.layers[s].out_channel, torch.arange(group.size))
            for s in group.sources
        )
        if group.prunable and norms and all(norms) and aligned:
            groups[group.index] = norms
    units = {u.name: u.norm for u in residual_units(graph) if u.norm is not None}
    scores = {}
    for name in [n for names in groups.values() for n in names] + list(units.values()):
        gamma = graph.graph_module.get_submodule(name).weight.detach()
        _checks.check_tensor(gamma, f"the BatchNorm scale of {name!r}", finite=True)
        scores[name] = bn_scale_scores(gamma.view(-1, 1))  # |gamma|, (C,)
    return BNScales(groups, scores, units)


# ---------------------------------------------------------------------------------------------


def _apply(model, graph, plan, example_input, compensate):
    if plan.keep:
        model = remove_channels(model, graph, plan.keep, compensate=compensate)
        if plan.units:  # the smaller copy's graph, from the same trace
            graph = graph_of_copy(graph, model, example_input)
    if plan.units:
        model = remove_units(model, graph, plan.units, compensate=compensate)
    return model


def _check(percent, variant, units, round_to, layer_keep):
    """Checked (percent, {option: value}) for the variant; options left None take defaults."""
    _checks.check_choice(variant, "variant", VARIANTS)
    percent = _checks.check_fraction(percent, "percent")
    if variant == "layer" and percent != 0:
        raise ValueError(
            "variant 'layer' removes whole residual units (set units=N); percent must be 0, "
            f"got {percent}"
        )
    given = {"units": units, "round_to": round_to, "layer_keep": layer_keep}
    for name, value in given.items():
        if value is not None and name not in _OPTIONS[variant]:
            raise ValueError(
                f"{name} is not used by variant {variant!r}; leave it None"
            )
    if "units" in _OPTIONS[variant] and units is None:
        raise ValueError(f"variant {variant!r} needs units, an int >= 1, got None")
    options = {}
    if units is not None:
        options["units"] = _checks.check_int(units, "units", low=1)
    if round_to is not None:
        options["round_to"] = _checks.check_int(round_to, "round_to", low=1)
    if layer_keep is not None:
        options["layer_keep"] = _checks.check_real(
            layer_keep, "layer_keep", low=0, high=1
        )
    return percent, options

