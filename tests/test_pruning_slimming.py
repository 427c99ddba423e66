"""slim, plan_slim, apply_plan and percent_for_macs: exactness with compensation, bad input,
the study row."""

import copy

import pytest
import torch
from pruning_models import X, tiny_darknet, zero_scale_model
from torch import nn

from minicompress import measure, models
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.slimming import percent_for_macs, plan_slim, slim


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
