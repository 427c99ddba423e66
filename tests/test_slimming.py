"""Network Slimming: the sparsity subgradient against autograd, each variant's masks on a tiny
Darknet whose BatchNorm scales are written out by hand, exactness with compensation, bad input."""

import copy

import pytest
import torch
from torch import nn

from minicompress import measure, models, train
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.layer_pruning import residual_units
from minicompress.pruning.slimming import percent_for_macs, plan_slim, slim
from minicompress.pruning.bn_sparsity import BNSparsity

X = torch.zeros(1, 1, 8, 8)

# A Darknet with one stage: stem (4) -> down (8) -> unit0 (conv1 4, conv2 8) -> unit1 (4, 8).
GAMMAS = {
    "stem.1": [0.9, 0.01, 0.5, 0.02],
    "stages.0.down.1": [0.8, 0.7, 0.03, 0.04, 0.6, 0.05, 0.9, 0.02],
    "stages.0.unit0.conv1.1": [0.01, 0.3, 0.02, 0.4],
    "stages.0.unit0.conv2.1": [0.05, 0.6, 0.01, 0.01, 0.02, 0.03, 0.8, 0.03],
    "stages.0.unit1.conv1.1": [0.2, 0.01, 0.03, 0.5],
    "stages.0.unit1.conv2.1": [0.01, 0.02, 0.01, 0.5, 0.7, 0.03, 0.04, 0.02],
}


def tiny_darknet(gammas=GAMMAS, seed=0):
    torch.manual_seed(seed)
    model = models.DarknetTiny(stem=4, widths=(8,), units=(2,)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, values in gammas.items():
            norm = model.get_submodule(name)
            norm.weight.copy_(torch.tensor(values))
            norm.bias.copy_(torch.rand(len(values), generator=generator) - 0.5)
            norm.running_var.copy_(torch.rand(len(values), generator=generator) + 0.5)
    return model


def kept(model, plan, layer):
    graph = build_dependency_graph(model, X)
    group = graph.layers[layer].out_group[0].item()
    return plan.keep[group].int().tolist() if group in plan.keep else None


# -- sparsity training -------------------------------------------------------------------------


def test_subgradient_is_s_times_the_sign_of_gamma():
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -0.2, 0.0]))
    model[1].weight.grad = torch.zeros(3)
    BNSparsity(0.1).after_backward(model, step=0)
    torch.testing.assert_close(model[1].weight.grad, torch.tensor([0.1, -0.1, 0.0]))


def test_callback_matches_an_l1_term_in_the_loss():
    # Autograd of s * sum|gamma| in the loss is the independent reference.
    torch.manual_seed(0)
    model = models.build("vgg_small", widths=(4, "M", 8))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with_callback, with_loss = copy.deepcopy(model), copy.deepcopy(model)
    train.fit(
        with_callback,
        [(x, y)],
        1,
        optimizer=torch.optim.SGD(with_callback.parameters(), lr=0.1),
        progress=False,
        callbacks=[BNSparsity(0.05)],
    )
    optimizer = torch.optim.SGD(with_loss.parameters(), lr=0.1)
    gammas = [m.weight for m in with_loss.modules() if isinstance(m, nn.BatchNorm2d)]
    loss = nn.functional.cross_entropy(with_loss(x), y) + 0.05 * sum(
        g.abs().sum() for g in gammas
    )
    loss.backward()
    optimizer.step()
    for a, b in zip(with_callback.parameters(), with_loss.parameters()):
        torch.testing.assert_close(a, b)


def test_global_decay_divides_s_by_100_after_half_the_steps():
    model = nn.BatchNorm1d(2)
    callback = BNSparsity(0.1, schedule="global_decay", total_steps=10)
    for step, expected in ((4, 0.1), (5, 0.001)):
        model.weight.grad = torch.zeros(2)
        callback.after_backward(model, step)
        torch.testing.assert_close(model.weight.grad, torch.full((2,), expected))


def test_local_decay_relieves_the_largest_15_percent():
    model = nn.BatchNorm1d(20)
    with torch.no_grad():
        model.weight.copy_(
            torch.arange(1.0, 21.0)
        )  # 85 % quantile: 1 + 0.85 * 19 = 17.15
    callback = BNSparsity(0.1, schedule="local_decay", total_steps=10)
    model.weight.grad = torch.zeros(20)
    callback.after_backward(model, 2)
    torch.testing.assert_close(
        model.weight.grad, torch.full((20,), 0.1)
    )  # before half-way
    model.weight.grad = torch.zeros(20)
    callback.after_backward(model, 7)
    torch.testing.assert_close(
        model.weight.grad, torch.tensor([0.1] * 17 + [0.001] * 3)
    )


def test_sparsity_training_pulls_the_scales_down():
    torch.manual_seed(0)
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(5)]
    means = {}
    for s in (0.0, 0.5):  # SGD: each step moves gamma by lr * s = 0.05 toward zero
        model = tiny_darknet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        train.fit(
            model,
            data,
            2,
            optimizer=optimizer,
            progress=False,
            callbacks=[BNSparsity(s)],
        )
        means[s] = torch.cat(
            [m.weight.abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        ).mean()
    assert means[0.5] < 0.5 * means[0.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(s=-1.0), r"s must be a finite number >= 0, got -1.0"),
        (
            dict(schedule="cosine"),
            r"schedule must be one of 'constant', 'global_decay', 'local_decay'",
        ),
        (dict(schedule="global_decay"), r"needs total_steps, an int >= 1, got None"),
        (dict(total_steps=10), r"total_steps is used by the decaying schedules only"),
    ],
)
def test_bad_sparsity_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BNSparsity(**kwargs)


# -- the variants ------------------------------------------------------------------------------


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


def test_residual_units_are_found_in_the_graph():
    graph = build_dependency_graph(
        models.build("darknet_tiny"), torch.zeros(1, 1, 28, 28)
    )
    units = residual_units(graph)
    assert [u.name for u in units] == [
        "stages.0.unit0",
        "stages.1.unit0",
        "stages.1.unit1",
        "stages.2.unit0",
        "stages.2.unit1",
    ]
    assert units[0].norm == "stages.0.unit0.conv2.1"
    # torchvision-style blocks apply ReLU after the add: not removable
    assert (
        residual_units(
            build_dependency_graph(models.build("resnet8"), torch.zeros(1, 1, 28, 28))
        )
        == []
    )


# -- exactness ---------------------------------------------------------------------------------


def zero_scale_model():
    """darknet_tiny whose last stage has channels 0-9 at gamma = 0 in every member of its
    residual group (beta != 0), and whose last unit has gamma = 0 on its 3x3 conv: what they
    feed is read by 1x1 convs and by the pooled classifier only, so removal is exact."""
    torch.manual_seed(0)
    model = models.build("darknet_tiny").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
        for name in ("down", "unit0.conv2", "unit1.conv2"):
            model.stages[2].get_submodule(name)[1].weight[:10] = 0
    return model


def test_slim_with_compensation_matches_the_unpruned_model():
    model = zero_scale_model()
    x = torch.randn(4, 1, 28, 28)
    graph = build_dependency_graph(model, x[:1])
    ranked = sum(
        graph.layers[n].out_channel.numel()
        for n in plan_slim(model, 0.0, "slim", x[:1]).ranked
    )
    percent = 30 / ranked  # exactly the 3 x 10 zero scales fall under the threshold
    with torch.no_grad():
        exact = slim(model, percent, "slim", x[:1])
        plain = slim(model, percent, "slim", x[:1], compensate=False)
        assert exact.stages[2].down[0].out_channels == 118
        torch.testing.assert_close(exact(x), model(x), atol=1e-5, rtol=0)
        assert (plain(x) - model(x)).abs().max() > 1e-3


def test_layer_removal_with_compensation_matches_the_unpruned_model():
    model = zero_scale_model()
    with torch.no_grad():
        model.stages[2].unit1.conv2[1].weight.zero_()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        pruned = slim(model, 0, "layer", x[:1], units=1)
        assert isinstance(pruned.stages[2].unit1, nn.Identity)
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=0)
        plain = slim(model, 0, "layer", x[:1], units=1, compensate=False)
        assert (plain(x) - model(x)).abs().max() > 1e-3


def test_resnet_normal_and_slim_prune_and_run():
    model = models.build("resnet8").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(
                    torch.rand(module.num_features, generator=generator)
                )
    x = torch.randn(2, 1, 28, 28)
    for variant in ("normal", "slim"):
        pruned = slim(model, 0.4, variant, x[:1])
        assert measure.count_params(pruned) < measure.count_params(model)
        assert pruned(x).shape == (2, 10)
    assert (
        slim(model, 0.4, "normal", x[:1]).layer1[0].conv2.out_channels == 16
    )  # residual: whole


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1.0, "slim"), {}, r"percent must be a float in \[0, 1\), got 1.0"),
        (
            (0.5, "thin"),
            {},
            r"variant must be one of 'normal', 'shortcut', 'slim', 'regular', 'layer', "
            r"'layer_channel'; got 'thin'",
        ),
        ((0.5, "normal"), dict(units=2), r"units is not used by variant 'normal'"),
        ((0.5, "slim"), dict(round_to=8), r"round_to is not used by variant 'slim'"),
        ((0.0, "layer"), {}, r"variant 'layer' needs units, an int >= 1, got None"),
        ((0.5, "layer"), dict(units=1), r"percent must be 0, got 0.5"),
        (
            (0.0, "layer"),
            dict(units=3),
            r"units=3 but the model has only 2 residual units",
        ),
        (
            (0.9, "normal"),
            {},
            r"percent 0.9 would remove every channel of 'stages.0.unit0.conv1.1' .* largest safe percent for variant 'normal' is 0.6666",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(args, kwargs, match):
    model = tiny_darknet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        slim(model, args[0], args[1], X, **kwargs)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_the_largest_safe_percent_is_safe():
    # unit0.conv1's largest |gamma| 0.4 is the smallest layer maximum; 8 of 12 ranked are below
    safe = plan_slim(tiny_darknet(), 0.0, "normal", X).safe_percent
    assert safe == 8 / 12
    pruned = slim(tiny_darknet(), safe, "normal", X)
    assert pruned.stages[0].unit0.conv1[0].out_channels == 1


@pytest.mark.parametrize(
    "name, variant, match",
    [
        (
            "vgg_small",
            "slim",
            r"variant 'slim' shares masks across residual adds, and the model has none",
        ),
        (
            "resnet8",
            "layer",
            r"variant 'layer' removes residual units .* and the model has none",
        ),
        (
            "lenet5",
            "normal",
            r"no prunable conv of the model has a BatchNorm right after it",
        ),
    ],
)
def test_a_variant_the_model_cannot_take_is_an_error(name, variant, match):
    kwargs = dict(units=1) if variant == "layer" else {}
    with pytest.raises(ValueError, match=match):
        slim(
            models.build(name),
            0.0 if variant == "layer" else 0.3,
            variant,
            torch.zeros(1, 1, 28, 28),
            **kwargs,
        )


def test_study_row_slim_prunes_a_batchnorm_model_and_skips_one_without():
    from minicompress import study

    rows = study.run_study(
        ["slim"], dataset="digits", model="darknet_tiny", epochs=2, progress=False
    )
    assert [r["name"] for r in rows] == ["baseline", "slim"]
    assert rows[1]["macs"] < rows[0]["macs"]
    with pytest.warns(
        UserWarning,
        match=r"'slim' skipped: slimming ranks BatchNorm scales and LeNet300",
    ):
        rows = study.run_study(
            ["slim"], dataset="digits", model="lenet300", epochs=1, progress=False
        )
    assert [r["name"] for r in rows] == ["baseline"]


def test_percent_for_macs_matches_a_mac_target_and_knows_its_limit():
    model = zero_scale_model()
    x = torch.zeros(1, 1, 28, 28)
    percent = percent_for_macs(model, 0.4, "slim", x)
    removed = 1 - measure.macs(slim(model, percent, "slim", x), x) / measure.macs(
        model, x
    )
    assert abs(removed - 0.4) <= 0.01
    with pytest.raises(
        ValueError, match=r"variant 'normal' removes at most 0\.\d+ of the MACs"
    ):
        percent_for_macs(model, 0.9, "normal", x)


def test_each_variant_is_a_plan_function_on_bn_scales():
    # Group 0 has one conv (a); group 1 is a residual group of b and c. Scores written out.
    from minicompress.pruning.slim_variants import BNScales, VARIANTS

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
    assert normal.threshold == 0.5 and normal.keep[0].tolist() == [True, False, True, False]
    assert 1 not in normal.keep
    shortcut = VARIANTS["shortcut"](scales, 0.5)  # ranks a and b: 7 values, sorted[3] = 0.3
    assert shortcut.keep[1].tolist() == [True, False, True]
    slim = VARIANTS["slim"](scales, 0.5)  # all 10: sorted[5] = 0.3; union of b and c
    assert slim.keep[1].tolist() == [True, True, True]
    regular = VARIANTS["regular"](scales, 0.5, round_to=3)  # a keeps 2 -> 3
    assert regular.keep[0].tolist() == [True, False, True, True]
    layer = VARIANTS["layer"](scales, 0.0, units=1)
    assert layer.units == ["unit"] and layer.unit_scores["unit"] == pytest.approx(0.22)
