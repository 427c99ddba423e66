"""Channel criteria, selection and surgery: scores against hand-worked values and
torch.nn.utils.prune, exactness of removing zeroed channels, compensation, bad input."""

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

from minicompress import measure, models
from minicompress.pruning.criteria import channel_scores
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.structured import (
    prune_channels,
    prune_channels_to_macs,
    select_channels,
)
from minicompress.pruning.surgery import remove_channels

X28 = torch.zeros(1, 1, 28, 28)


class _Head(nn.Module):
    """conv(3 filters) -> BN -> ReLU -> pool -> linear: one prunable group of 3 channels."""

    def __init__(self, weight=None, gamma=None):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 2, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            if weight is not None:
                self.conv.weight.copy_(torch.tensor(weight).view(3, 1, 2, 2))
            if gamma is not None:
                self.bn.weight.copy_(torch.tensor(gamma))

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


FILTERS = [[1.0, -2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [3.0, 0.0, 0.0, -4.0]]


def scores_of(model, criterion, **kwargs):
    graph = build_dependency_graph(model, torch.zeros(1, 1, 3, 3))
    return channel_scores(model, graph, criterion, **kwargs)[
        graph.group_of("conv").index
    ]


def test_filter_norm_scores_match_hand_computed_values():
    model = _Head(FILTERS)
    torch.testing.assert_close(scores_of(model, "l1"), torch.tensor([3.0, 2.0, 7.0]))
    torch.testing.assert_close(scores_of(model, "l2"), torch.tensor([5**0.5, 1.0, 5.0]))
    torch.testing.assert_close(
        scores_of(_Head(gamma=[0.5, -2.0, 0.1]), "bn_scale"),
        torch.tensor([0.5, 2.0, 0.1]),
    )


def test_fpgm_scores_are_summed_distances_to_the_other_filters():
    # |f0 - f1| = sqrt(0.25 + 6.25 + 0.25 + 0.25) = sqrt(7), |f0 - f2| = sqrt(4 + 4 + 0 + 16)
    # = sqrt(24), |f1 - f2| = sqrt(6.25 + 0.25 + 0.25 + 20.25) = sqrt(27)
    d01, d02, d12 = 7**0.5, 24**0.5, 27**0.5
    expected = torch.tensor([d01 + d02, d01 + d12, d02 + d12])
    torch.testing.assert_close(scores_of(_Head(FILTERS), "fpgm"), expected)


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


class _Gated(nn.Module):
    """_Head with an explicit gate z after the BatchNorm, the formulation of Molchanov 2019."""

    def __init__(self, head):
        super().__init__()
        self.head = head
        self.z = nn.Parameter(torch.ones(1, 3, 1, 1))

    def forward(self, x):
        h = self.head
        y = torch.relu(h.bn(h.conv(x)) * self.z)
        return h.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_taylor_score_is_the_squared_gate_gradient():
    torch.manual_seed(0)
    head = _Head(FILTERS, gamma=[0.7, 1.2, 0.4]).eval()
    with torch.no_grad():
        head.bn.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))
    batches = [(torch.randn(4, 1, 3, 3), torch.randint(0, 2, (4,))) for _ in range(2)]
    gated = _Gated(head).eval()
    expected = torch.zeros(3)
    for inputs, targets in batches:  # autograd on the gate is the independent reference
        gated.zero_grad()
        nn.functional.cross_entropy(gated(inputs), targets).backward()
        expected += gated.z.grad.flatten() ** 2 / 2
    head.zero_grad(set_to_none=True)
    torch.testing.assert_close(scores_of(head, "taylor", batch=batches), expected)
    assert head.conv.weight.grad is None  # computed on a copy


def zero_channels(model, graph, keep, beta=True):
    """The masked model: removed channels get zero filters, zero BN scale (and shift)."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for index, mask in keep.items():
            group = graph.groups[index]
            for name in group.sources + group.norms:
                module = masked.get_submodule(name)
                removed = ~mask[graph.layers[name].out_channel]
                module.weight[removed] = 0
                if module.bias is not None and (beta or name in group.sources):
                    module.bias[removed] = 0
    return masked


def randomize_bn(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "name, criterion",
    [
        ("darknet_tiny", "l1"),
        ("darknet_tiny", "bn_scale"),
        ("resnet8", "l1"),
        ("resnet8", "bn_scale"),
        ("lenet5", "l1"),  # no BatchNorm: conv and linear layers only
    ],
)
def test_removing_zeroed_channels_gives_the_masked_model_outputs(name, criterion):
    model = randomize_bn(models.build(name))
    graph = build_dependency_graph(model, X28)
    generator = torch.Generator().manual_seed(1)
    keep = {}
    for group in graph.groups:
        if group.prunable:  # a random quarter of every group
            keep[group.index] = torch.ones(group.size, dtype=torch.bool)
            keep[group.index][
                torch.randperm(group.size, generator=generator)[: group.size // 4]
            ] = False
    masked = zero_channels(model, graph, keep)
    pruned = prune_channels(masked, 0.25, criterion, X28)
    assert measure.count_params(pruned) < measure.count_params(model)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-5, rtol=0)


class _OneByOne(nn.Module):
    """3x3 conv-BN-leaky, then 1x1 consumers, a residual add and a linear head: every reader of
    a removed channel has no zero padding, so compensation is exact."""

    def __init__(self, head_kernel=1):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 6, head_kernel, padding=head_kernel // 2)
        self.fc = nn.Linear(6, 4)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x):
        y = self.act(self.b1(self.c1(x)))
        y = y + self.act(self.b2(self.c2(y)))
        return self.fc(
            torch.flatten(
                nn.functional.adaptive_avg_pool2d(torch.relu(self.c3(y)), 1), 1
            )
        )


def test_compensation_makes_removing_zero_scale_channels_exact():
    model = randomize_bn(_OneByOne())
    graph = build_dependency_graph(model, torch.zeros(1, 3, 6, 6))
    keep = {graph.group_of("c1").index: torch.tensor([1, 0, 1, 1, 0, 1, 1, 0]).bool()}
    masked = zero_channels(model, graph, keep, beta=False)  # gamma = 0, beta != 0
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        exact = prune_channels(masked, 3 / 8, "bn_scale", x[:1], compensate=True)
        plain = prune_channels(masked, 3 / 8, "bn_scale", x[:1], compensate=False)
        assert exact.c2.in_channels == 5
        torch.testing.assert_close(exact(x), masked(x), atol=1e-5, rtol=0)
        assert (plain(x) - masked(x)).abs().max() > 1e-3  # what compensation buys


def head_map(m, x):
    """The feature map of _OneByOne's padded 3x3 head conv, before pooling."""
    y = m.act(m.b1(m.c1(x)))
    return m.c3(y + m.act(m.b2(m.c2(y))))


def test_compensation_is_exact_inside_but_not_at_the_border_of_a_padded_conv():
    model = randomize_bn(_OneByOne(head_kernel=3))
    graph = build_dependency_graph(model, torch.zeros(1, 3, 6, 6))
    keep = {graph.group_of("c1").index: torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()}
    masked = zero_channels(model, graph, keep, beta=False)
    pruned = remove_channels(
        masked,
        build_dependency_graph(masked, torch.zeros(1, 3, 6, 6)),
        keep,
        compensate=True,
    )
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        difference = (head_map(pruned, x) - head_map(masked, x)).abs()
    assert difference[:, :, 1:-1, 1:-1].max() < 1e-5  # interior: exact
    assert difference[:, :, 0, :].max() > 1e-3  # the border row read zero padding


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


def test_bn_statistics_are_cut_and_num_batches_tracked_kept():
    model = randomize_bn(models.build("vgg_small"))
    model.features[0][1].num_batches_tracked.fill_(7)
    pruned = prune_channels(model, 0.5, "bn_scale", X28)
    bn, old = pruned.features[0][1], model.features[0][1]
    kept = old.weight.detach().abs().argsort(descending=True)[:16].sort().values
    for name in ("weight", "bias", "running_mean", "running_var"):
        torch.testing.assert_close(
            getattr(bn, name).detach(), getattr(old, name).detach()[kept]
        )
    assert bn.num_batches_tracked.item() == 7


def test_min_channels_and_round_to_set_the_kept_counts():
    model = models.build("resnet8")  # groups of 16, 32 and 64 channels
    pruned = prune_channels(model, 0.9, "l1", X28, min_channels=4)
    assert (
        pruned.layer1[0].conv1.out_channels == 4
    )  # 16 - floor(14.4) = 2 -> floor of 4
    assert pruned.layer3[0].conv1.out_channels == 7  # 64 - 57
    pruned = prune_channels(model, 0.6, "l1", X28, round_to=8)
    assert pruned.layer1[0].conv1.out_channels == 8  # 16 - 9 = 7 -> up to 8
    assert pruned.layer2[0].conv1.out_channels == 16  # 32 - 19 = 13 -> 16


def test_global_scope_removes_the_fraction_of_all_channels():
    model = models.build("resnet8")
    graph = build_dependency_graph(model, X28)
    scores = channel_scores(model, graph, "random")
    keep = select_channels(graph, scores, 0.4, scope="global")
    total = sum(len(m) for m in keep.values())
    assert total - sum(int(m.sum()) for m in keep.values()) == int(0.4 * total)
    # unlike scope="layer", the groups lose different fractions
    assert len({round(1 - float(m.float().mean()), 2) for m in keep.values()}) > 1


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


def test_bn_scale_on_a_model_without_batchnorm_is_an_error():
    with pytest.raises(
        ValueError, match=r"'bn_scale' needs BatchNorm layers; the model has none"
    ):
        prune_channels(models.build("lenet5"), 0.5, "bn_scale", X28)


def test_remove_channels_rejects_bad_masks():
    model = models.build("resnet8")
    graph = build_dependency_graph(model, X28)
    fc = graph.group_of("fc").index
    with pytest.raises(
        ValueError,
        match=r"group 6 \(sources \['fc'\]\) cannot lose channels: it reaches the model output",
    ):
        remove_channels(model, graph, {fc: torch.arange(10) > 0})
    with pytest.raises(ValueError, match="removes every channel of group 1"):
        remove_channels(model, graph, {1: torch.zeros(16, dtype=torch.bool)})
    with pytest.raises(
        ValueError, match=r"keep\[1\] must have shape \(16,\), got \(8,\)"
    ):
        remove_channels(model, graph, {1: torch.ones(8, dtype=torch.bool)})
    with pytest.raises(TypeError, match=r"keep\[1\] must be a bool tensor"):
        remove_channels(model, graph, {1: torch.ones(16)})
    with pytest.raises(ValueError, match="graph does not describe this model"):
        remove_channels(models.build("resnet8"), graph, {})


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


def test_recalibrate_batchnorm_gives_the_average_of_the_batch_statistics():
    from minicompress.pruning.structured import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    batches = [torch.randn(4, 1, 5, 5) + i for i in range(2)]
    recalibrate_batchnorm(model, [(b, None) for b in batches])
    # reference: the conv outputs computed directly, per-batch mean and unbiased variance
    outputs = [nn.functional.conv2d(b, model[0].weight, model[0].bias) for b in batches]
    means = torch.stack([o.mean((0, 2, 3)) for o in outputs]).mean(0)
    variances = torch.stack(
        [o.transpose(0, 1).flatten(1).var(1) for o in outputs]
    ).mean(0)
    torch.testing.assert_close(model[1].running_mean, means.detach())
    torch.testing.assert_close(model[1].running_var, variances.detach())
    assert not model.training and model[1].momentum == 0.1
    with pytest.raises(ValueError, match="batches is empty"):
        recalibrate_batchnorm(model, [])


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
