"""BNSparsity: the subgradient against autograd of an L1 term, the decaying schedules, bad
arguments."""

import copy

import pytest
import torch
from pruning_models import tiny_darknet
from torch import nn

from minicompress import models, train
from minicompress.pruning.bn_sparsity import BNSparsity


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
