"""The six slimming variants' plans on a tiny Darknet whose BatchNorm scales are written
out by hand, and on BatchNorm scales given directly."""

import pytest
import torch
from pruning_models import X, kept, tiny_darknet
from torch import nn

from minicompress import measure
from minicompress.pruning.slimming import plan_slim, slim


def test_normal_ranks_only_convs_off_the_residual_path():
    model = tiny_darknet()
    plan = plan_slim(model, 0.5, "normal", X)
    # ranked: stem, unit0.conv1, unit1.conv1 (12 values); sorted[6] = 0.2
    assert plan.threshold == pytest.approx(0.2)
    assert kept(model, plan, "stem.0") == [1, 0, 1, 0]
    assert kept(model, plan, "stages.0.unit0.conv1.0") == [0, 1, 0, 1]
    assert kept(model, plan, "stages.0.unit1.conv1.0") == [1, 0, 0, 1]
    assert (
        kept(model, plan, "stages.0.down.0") is None
    )  # the residual group stays whole


def test_shortcut_gives_the_group_its_first_convs_mask():
    model = tiny_darknet()
    plan = plan_slim(model, 0.5, "shortcut", X)
    # ranked: the 12 above and down's 8; sorted[10] = 0.2; down keeps |gamma| >= 0.2
    assert plan.threshold == pytest.approx(0.2)
    assert "stages.0.unit0.conv2.1" not in plan.ranked
    assert kept(model, plan, "stages.0.down.0") == [1, 1, 0, 0, 1, 0, 1, 0]


def test_slim_keeps_the_union_of_the_residual_masks():
    model = tiny_darknet()
    plan = plan_slim(model, 0.62, "slim", X)
    # 36 ranked, 22 of them below 0.2: sorted[floor(36 * 0.62) = 22] = 0.2.
    # down keeps {0, 1, 4, 6}, unit0.conv2 {1, 6}, unit1.conv2 {3, 4}: the union {0, 1, 3, 4, 6}
    assert plan.threshold == pytest.approx(0.2)
    assert kept(model, plan, "stages.0.unit1.conv2.0") == [1, 1, 0, 1, 1, 0, 1, 0]
    assert kept(model, plan, "stem.0") == [1, 0, 1, 0]


def test_slim_per_layer_floor():
    model = tiny_darknet()
    plan = plan_slim(model, 0.62, "slim", X, layer_keep=0.5)
    # unit0.conv2 alone keeps only 2 of 8 above the threshold; the floor of 4 adds its next
    # best, channels 0 (0.05) and 5 (0.03, ahead of channel 7's tie by index)
    assert kept(model, plan, "stages.0.unit1.conv2.0") == [1, 1, 0, 1, 1, 1, 1, 0]
    assert kept(model, plan, "stages.0.unit0.conv1.0") == [
        0,
        1,
        0,
        1,
    ]  # floor 2 already met


def test_regular_rounds_the_kept_counts_up():
    model = tiny_darknet()
    plan = plan_slim(model, 0.5, "regular", X, round_to=3)
    assert kept(model, plan, "stem.0") == [1, 0, 1, 1]  # 2 kept -> 3: the top three
    assert kept(model, plan, "stages.0.unit1.conv1.0") == [1, 0, 1, 1]
    assert sorted(plan.keep) == sorted(plan_slim(model, 0.5, "normal", X).keep)


def test_layer_removes_the_units_with_the_lowest_mean_gamma():
    model = tiny_darknet()
    plan = plan_slim(model, 0, "layer", X, units=1)
    # mean |gamma| of unit0.conv2: 1.55 / 8; of unit1.conv2: 1.33 / 8
    assert plan.unit_scores == pytest.approx(
        {"stages.0.unit0": 1.55 / 8, "stages.0.unit1": 1.33 / 8}
    )
    assert plan.units == ["stages.0.unit1"]
    pruned = slim(model, 0, "layer", X, units=1)
    assert isinstance(pruned.stages[0].unit1, nn.Identity)
    assert measure.macs(pruned, X) < measure.macs(model, X)


def test_layer_channel_scores_units_on_the_channels_left():
    model = tiny_darknet()
    plan = plan_slim(model, 0.62, "layer_channel", X, units=1)
    # after the slim step both conv2 layers keep channels {0, 1, 3, 4, 6}
    assert plan.unit_scores["stages.0.unit0"] == pytest.approx(
        (0.05 + 0.6 + 0.01 + 0.02 + 0.8) / 5
    )
    assert plan.unit_scores["stages.0.unit1"] == pytest.approx(
        (0.01 + 0.02 + 0.5 + 0.7 + 0.04) / 5
    )
    pruned = slim(model, 0.62, "layer_channel", X, units=1)
    assert isinstance(pruned.stages[0].unit1, nn.Identity)
    assert pruned.stages[0].down[0].out_channels == 5


def test_the_largest_safe_percent_is_safe():
    # unit0.conv1's largest |gamma| 0.4 is the smallest layer maximum; 8 of 12 ranked are below
    safe = plan_slim(tiny_darknet(), 0.0, "normal", X).safe_percent
    assert safe == 8 / 12
    pruned = slim(tiny_darknet(), safe, "normal", X)
    assert pruned.stages[0].unit0.conv1[0].out_channels == 1


def test_each_variant_is_a_plan_function_on_bn_scales():
    # Group 0 has one conv (a); group 1 is a residual group of b and c. Scores written out.
    from minicompress.pruning.slim_variants import VARIANTS, BNScales

    scales = BNScales(
        groups={0: ["a"], 1: ["b", "c"]},
        scores={
            "a": torch.tensor([0.9, 0.1, 0.5, 0.2]),
            "b": torch.tensor([0.8, 0.05, 0.3]),
            "c": torch.tensor([0.02, 0.6, 0.04]),
        },
        units={"unit": "c"},
    )
    normal = VARIANTS["normal"](scales, 0.5)  # ranks a only: sorted[2] = 0.5
    assert normal.threshold == 0.5 and normal.keep[0].tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert 1 not in normal.keep
    shortcut = VARIANTS["shortcut"](
        scales, 0.5
    )  # ranks a and b: 7 values, sorted[3] = 0.3
    assert shortcut.keep[1].tolist() == [True, False, True]
    slim = VARIANTS["slim"](scales, 0.5)  # all 10: sorted[5] = 0.3; union of b and c
    assert slim.keep[1].tolist() == [True, True, True]
    regular = VARIANTS["regular"](scales, 0.5, round_to=3)  # a keeps 2 -> 3
    assert regular.keep[0].tolist() == [True, False, True, True]
    layer = VARIANTS["layer"](scales, 0.0, units=1)
    assert layer.units == ["unit"] and layer.unit_scores["unit"] == pytest.approx(0.22)
