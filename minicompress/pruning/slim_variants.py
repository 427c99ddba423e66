"""The six YOLO-lineage slimming variants, one plan function each: which BatchNorm scales are
ranked, how one global threshold over them becomes keep masks, and which residual units go.

Every variant ranks the scores of `criteria.bn_scale_scores` (|gamma|) of some BatchNorm layers,
takes the threshold t = sorted(ranked scores)[floor(N * percent)] and keeps |gamma| >= t:

    normal_plan         rank the convs that touch no residual add; residual groups stay whole
                        (Lam1360/YOLOv3-model-pruning)
    shortcut_plan       every conv of a residual group takes the mask of the group's first conv,
                        whose gammas alone are ranked (coldlarry/YOLOv3-complete-pruning)
    slim_plan           rank every conv; a residual group keeps the union (OR) of its members'
                        masks, each member at least max(1, int(C * layer_keep)) channels
                        (Zhang et al., "SlimYOLOv3", arXiv:1907.11093)
    regular_plan        normal, each kept count rounded up to a multiple of round_to
    layer_plan          the `units` residual units whose last BatchNorm has the lowest mean
                        |gamma| (tanluren/yolov3-channel-and-layer-pruning)
    layer_channel_plan  slim, then layer scored on the channels slim keeps

Each takes the `BNScales` of a model (what can be ranked) and the percent, plus its own option,
and returns a `SlimPlan`; `slimming.plan_slim` checks the arguments and picks one from
`VARIANTS`. The sources keep |gamma| > t for slim and round regular counts to powers of two or
to multiples of 8 or 32; we use >= t everywhere and multiples of `round_to`.
"""

import math
from dataclasses import dataclass, field

import torch

__all__ = [
    "BNScales",
    "SlimPlan",
    "VARIANTS",
    "normal_plan",
    "shortcut_plan",
    "slim_plan",
    "regular_plan",
    "layer_plan",
    "layer_channel_plan",
]


@dataclass
class BNScales:
    """What slimming can rank: `groups` {group index: names of the BatchNorms right after the
    group's producing convs, in graph order (two or more for a residual group)}, `scores`
    {BatchNorm name: (C,) |gamma|} and `units` {residual unit name: its last BatchNorm}."""

    groups: dict
    scores: dict
    units: dict = field(default_factory=dict)


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


def normal_plan(scales, percent):
    """normal: rank the BatchNorms of convs that touch no residual add; residual groups
    keep every channel, so no two layers need to agree on a mask."""
    single = {i: names[0] for i, names in scales.groups.items() if len(names) == 1}
    plan = _thresholded("normal", scales, list(single.values()), percent)
    plan.keep = {i: scales.scores[name] >= plan.threshold for i, name in single.items()}
    return plan


def shortcut_plan(scales, percent):
    """shortcut: every conv of a residual group reuses the mask of the group's first conv
    (the stage-entry conv); only that conv's gammas are ranked."""
    _need_residual_groups(scales, "shortcut")
    first = {i: names[0] for i, names in scales.groups.items()}
    plan = _thresholded("shortcut", scales, list(first.values()), percent)
    plan.keep = {i: scales.scores[name] >= plan.threshold for i, name in first.items()}
    return plan


def slim_plan(scales, percent, layer_keep=0.01):
    """slim: rank every conv; a group keeps the union of its members' masks, and each member
    keeps at least max(1, int(C * layer_keep)) of its largest gammas (SlimYOLOv3 used 0.1)."""
    _need_residual_groups(scales, "slim")
    ranked = [name for names in scales.groups.values() for name in names]
    plan = _thresholded("slim", scales, ranked, percent, floored=True)
    for index, names in scales.groups.items():
        mask = torch.zeros(len(scales.scores[names[0]]), dtype=torch.bool)
        for name in names:
            score = scales.scores[name]
            floor = max(1, int(len(score) * layer_keep))
            mask |= _top(score, max(floor, int((score >= plan.threshold).sum())))
        plan.keep[index] = mask
    return plan


def regular_plan(scales, percent, round_to=8):
    """regular: normal, with each kept count rounded up to a multiple of `round_to` (at least
    round_to, at most the layer), the sizes SIMD kernels and accelerators handle best."""
    single = {i: names[0] for i, names in scales.groups.items() if len(names) == 1}
    plan = _thresholded("regular", scales, list(single.values()), percent, floored=True)
    for index, name in single.items():
        score = scales.scores[name]
        count = math.ceil(int((score >= plan.threshold).sum()) / round_to) * round_to
        plan.keep[index] = _top(score, min(len(score), max(round_to, count)))
    return plan


def layer_plan(scales, percent, units):
    """layer: remove the `units` residual units whose last BatchNorm has the lowest mean |gamma|
    (ties broken by name); `percent` must be 0, as no channel is ranked."""
    plan = SlimPlan("layer", float(percent))
    found = _units(scales, units, "layer")
    plan.unit_scores = {u: float(scales.scores[n].mean()) for u, n in found.items()}
    plan.units = sorted(plan.unit_scores, key=lambda u: (plan.unit_scores[u], u))[
        :units
    ]
    return plan


def layer_channel_plan(scales, percent, units, layer_keep=0.01):
    """layer_channel: slim at `percent`, then remove the `units` residual units whose last
    BatchNorm has the lowest mean |gamma| over the channels slim keeps."""
    found = _units(scales, units, "layer_channel")
    plan = slim_plan(scales, percent, layer_keep)
    plan.variant = "layer_channel"
    group_of = {name: i for i, names in scales.groups.items() for name in names}
    left = dict(scales.scores)
    for norm in found.values():
        if norm in group_of:  # score the unit on its channels that remain
            left[norm] = left[norm][plan.keep[group_of[norm]]]
    picked = layer_plan(BNScales(scales.groups, left, scales.units), 0, units)
    plan.units, plan.unit_scores = picked.units, picked.unit_scores
    return plan


VARIANTS = {
    "normal": normal_plan,
    "shortcut": shortcut_plan,
    "slim": slim_plan,
    "regular": regular_plan,
    "layer": layer_plan,
    "layer_channel": layer_channel_plan,
}


# ---------------------------------------------------------------------------------------------


def _thresholded(variant, scales, ranked, percent, floored=False):
    """A plan with the global threshold over the `ranked` BatchNorms' scores. Unless a floor
    keeps every layer alive (`floored`: slim's layer_keep, regular's round_to), a percent that
    would empty a layer is refused, naming it and the largest safe percent."""
    if not scales.groups:
        raise ValueError(
            "slimming ranks BatchNorm scales: no prunable conv of the model has a BatchNorm "
            "right after it"
        )
    if not ranked:
        raise ValueError(
            f"variant {variant!r} ranks no BatchNorm of this model: every conv with a "
            "BatchNorm right after it feeds a residual add (use 'shortcut' or 'slim')"
        )
    values = torch.sort(torch.cat([scales.scores[n] for n in ranked])).values
    index = min(math.floor(len(values) * percent), len(values) - 1)
    threshold = float(
        values[0] if percent == 0 else values[index]
    )  # 0: keep everything
    # Any threshold above the smallest per-layer maximum empties that layer. With k ranked
    # values below it, percents with floor(N * percent) <= k are safe: k / N is the largest.
    lowest_max = min(float(scales.scores[n].max()) for n in ranked)
    safe = int((values < lowest_max).sum()) / len(values)
    emptied = [n for n in ranked if scales.scores[n].max() < threshold]
    if floored:
        return SlimPlan(variant, float(percent), threshold, None, ranked)
    if emptied:
        name, shown = (
            emptied[0],
            math.floor(safe * 1e4) / 1e4,
        )  # rounded down: still safe
        raise ValueError(
            f"percent {percent} would remove every channel of {name!r} (its largest |gamma| "
            f"{float(scales.scores[name].max()):.4g} is below the threshold {threshold:.4g}); "
            f"the largest safe percent for variant {variant!r} is {shown:.4f}"
        )
    return SlimPlan(variant, float(percent), threshold, safe, ranked)


def _top(score, count):
    """Bool mask of the `count` largest entries of `score` (ties: the lower index)."""
    mask = torch.zeros(len(score), dtype=torch.bool)
    mask[score.argsort(descending=True, stable=True)[:count]] = True
    return mask


def _need_residual_groups(scales, variant):
    if not any(len(names) > 1 for names in scales.groups.values()):
        raise ValueError(
            f"variant {variant!r} shares masks across residual adds, and the model has none "
            "(use 'normal' or 'regular')"
        )


def _units(scales, units, variant):
    if not scales.units:
        raise ValueError(
            f"variant {variant!r} removes residual units (a submodule computing x + f(x) with a "
            "BatchNorm on f's last conv), and the model has none"
        )
    if units > len(scales.units):
        raise ValueError(
            f"units={units} but the model has only {len(scales.units)} residual units"
        )
    return scales.units
