"""prune_channels and prune_channels_to_macs: what torch.nn.utils.prune keeps, a new model
with the caller's left alone, MAC targets, torchvision models, bad input, dict amounts."""

import copy

import pytest
import torch
import torchvision
from pruning_models import X28
from torch.nn.utils import prune

from minicompress import measure, models
from minicompress.pruning.structured import (
    prune_channels,
    prune_channels_to_macs,
)


@pytest.mark.parametrize("criterion, n", [("l1", 1), ("l2", 2)])
def test_filter_norm_pruning_keeps_what_torch_ln_structured_keeps(criterion, n):
    # torch.nn.utils.prune.ln_structured is PyTorch's own Ln filter pruning (dim 0 = filters).
    torch.manual_seed(0)
    model = models.build("vgg_small")
    reference = copy.deepcopy(model.features[0][0])
    prune.ln_structured(reference, "weight", amount=0.25, n=n, dim=0)
    expected = reference.weight_mask.flatten(1).any(1)
    pruned = prune_channels(model, 0.25, criterion, X28)
    kept = pruned.features[0][0].weight
    torch.testing.assert_close(kept, model.features[0][0].weight[expected])


def test_prune_channels_returns_a_new_model_and_leaves_the_callers_alone():
    model = models.build("resnet8")
    before = copy.deepcopy(model.state_dict())
    pruned = prune_channels(model, 0.5, "l2", X28)
    assert pruned is not model and type(pruned) is type(model)
    assert (
        pruned.layer1[0].conv1.out_channels == 8
        and pruned.layer1[0].bn1.num_features == 8
    )
    assert pruned.fc.out_features == 10  # the classes are never pruned
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_random_criterion_is_seeded():
    model = models.build("lenet5")
    a = prune_channels(model, 0.5, "random", X28, seed=3)
    b = prune_channels(model, 0.5, "random", X28, seed=3)
    assert torch.equal(a.conv2.weight, b.conv2.weight)


def test_prune_to_macs_reaches_the_target():
    model = models.build("resnet8")
    pruned = prune_channels_to_macs(model, 0.5, "l1", X28, scope="global")
    removed = 1 - measure.macs(pruned, X28) / measure.macs(model, X28)
    assert 0.495 <= removed <= 0.53


@pytest.mark.parametrize(
    "builder",
    [
        lambda: torchvision.models.resnet18(weights=None),
        lambda: torchvision.models.mobilenet_v2(weights=None),
    ],
)
def test_torchvision_models_prune_and_run(builder):
    model = builder()
    x = torch.randn(2, 3, 32, 32)
    pruned = prune_channels(model, 0.5, "l1", x[:1])
    assert measure.count_params(pruned) < 0.5 * measure.count_params(model)
    with torch.no_grad():
        assert pruned.eval()(x).shape == (2, 1000)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(amount=1.0),
            ValueError,
            r"amount must be a float in \[0, 1\) or a dict of them, got 1.0",
        ),
        (
            dict(amount=-0.1),
            ValueError,
            r"amount must be a float in \[0, 1\) or a dict of them, got -0.1",
        ),
        (
            dict(amount="half"),
            TypeError,
            r"amount must be a float in \[0, 1\) or a dict of them, got 'half'",
        ),
        (
            dict(criterion="l3"),
            ValueError,
            r"criterion must be one of 'l1', 'l2', .*got 'l3'",
        ),
        (
            dict(scope="model"),
            ValueError,
            r"scope must be one of 'layer', 'global'; got 'model'",
        ),
        (dict(min_channels=0), ValueError, r"min_channels must be an int >= 1, got 0"),
        (dict(round_to=2.0), TypeError, r"round_to must be an int >= 1, got 2.0"),
        (dict(criterion="taylor"), ValueError, r"'taylor' needs gradients: pass batch"),
        (
            dict(batch=(X28, torch.zeros(1).long())),
            ValueError,
            r"used by criterion 'taylor' only",
        ),
    ],
)
def test_bad_arguments_are_clear_errors_and_change_nothing(kwargs, error, match):
    model = models.build("resnet8")
    before = copy.deepcopy(model.state_dict())
    arguments = dict(amount=0.5, criterion="l1") | kwargs
    with pytest.raises(error, match=match):
        prune_channels(
            model, arguments.pop("amount"), arguments.pop("criterion"), X28, **arguments
        )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_study_row_channels_50_macs_halves_the_macs():
    from minicompress import study

    rows = study.run_study(
        ["channels_50_macs"],
        dataset="digits",
        model="lenet300",
        epochs=2,
        progress=False,
    )
    base, pruned = rows
    assert pruned["name"] == "channels_50_macs"
    assert 0.4 <= 1 - pruned["macs"] / base["macs"] <= 0.6
    assert pruned["params"] < base["params"] and pruned["accuracy"] > 0.5


def test_a_dict_amount_prunes_only_the_groups_it_names():
    model = models.build("resnet8")
    pruned = prune_channels(
        model, {"layer1.0.conv1": 0.5, "layer3.0.shortcut.0": 0.25}, "l1", X28
    )
    assert pruned.layer1[0].conv1.out_channels == 8
    assert pruned.layer3[0].conv2.out_channels == 48  # the shortcut's residual group
    assert pruned.layer2[0].conv1.out_channels == 32 and pruned.conv1.out_channels == 16
    for amount, match in (
        ({"conv1": 0.5, "layer1.0.conv2": 0.25}, r"two amounts, 0.5 and 0.25"),
        (
            {"layer9.conv": 0.5},
            r"names 'layer9.conv', which is not a conv or linear layer",
        ),
        (
            {"fc": 0.5},
            r"names 'fc', whose channels cannot be pruned: it reaches the model output",
        ),
        ({"conv1": 1.5}, r"amount must be a float in \[0, 1\) or a dict of them"),
    ):
        with pytest.raises(ValueError, match=match):
            prune_channels(model, amount, "l1", X28)
    with pytest.raises(ValueError, match="needs scope='layer', got 'global'"):
        prune_channels(model, {"conv1": 0.5}, "l1", X28, scope="global")
