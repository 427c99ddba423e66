"""Tests of minicompress.pruning.lottery: IMP with rewinding, worked by hand."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import models, train
from minicompress.pruning import find_ticket, get_mask, reinitialize, sparsity


def one_layer(weights):
    net = nn.Sequential(nn.Linear(len(weights), 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([weights]))
    return net


def fake_training(trained, steps=5):
    """A stand-in for train.fit: each step adds (trained - start) / steps to the weights."""

    def run(model, callbacks):
        original = model[0].parametrizations.weight.original
        start = original.detach().clone()
        for step in range(steps):
            with torch.no_grad():
                original.add_((torch.tensor([trained]) - start) / steps)
            for callback in callbacks:
                callback.after_step(model, step)

    return run


def test_one_round_prunes_by_trained_magnitude_and_rewinds_to_initialization():
    net = one_layer([1.0, 2.0, 3.0, 4.0])
    # Trained weights [4, -3, 0.5, 2]: the two smallest magnitudes (0.5 and 2) go.
    find_ticket(net, fake_training([4.0, -3.0, 0.5, 2.0]), sparsity=0.5, rounds=1)
    assert get_mask(net[0]).tolist() == [[True, True, False, False]]
    assert net[0].weight.tolist() == [[1.0, 2.0, 0.0, 0.0]]


def test_rewinding_to_step_k_restores_the_weights_after_k_steps():
    net = one_layer([0.0, 0.0, 0.0, 0.0])
    # Training moves [0, 0, 0, 0] -> [5, -10, 1, 20] in 5 equal steps; after 2 steps
    # the weights are [2, -4, 0.4, 8].
    find_ticket(
        net, fake_training([5.0, -10.0, 1.0, 20.0]), 0.25, rounds=1, rewind_step=2
    )
    assert get_mask(net[0]).tolist() == [[True, True, False, True]]
    torch.testing.assert_close(net[0].weight, torch.tensor([[2.0, -4.0, 0.0, 8.0]]))


def test_rounds_follow_the_geometric_schedule_and_report_each_ticket():
    torch.manual_seed(0)
    net = models.build("lenet300")
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    find_ticket(
        net,
        lambda m, cb: train.fit(
            m,
            [(torch.randn(8, 1, 28, 28), torch.arange(8))],
            1,
            progress=False,
            callbacks=cb,
        ),
        sparsity=0.75,
        rounds=2,
        on_round=lambda m, r, s: seen.append((r, s, sparsity(m))),
    )
    assert [(r, round(s, 12)) for r, s, _ in seen] == [(1, 0.5), (2, 0.75)]
    assert [round(x, 3) for _, _, x in seen] == [0.5, 0.75]
    # Layer scope: every layer at 75 %; every surviving weight back at its initial value.
    for name, value in sparsity(net, per_layer=True).items():
        assert value == pytest.approx(0.75, abs=1e-3)
    for key in ("features.0", "features.2", "classifier"):
        module = net.get_submodule(key)
        mask = get_mask(module)
        start = initial[f"{key}.weight"]
        assert torch.equal(module.weight[mask], start[mask])
        assert torch.equal(module.bias, initial[f"{key}.bias"])


def test_a_rewind_step_past_the_training_run_is_an_error():
    with pytest.raises(
        ValueError, match="rewind_step=9 but the first training run ended"
    ):
        find_ticket(
            one_layer([1.0, 2.0]), fake_training([1.0, 1.0]), 0.5, rewind_step=9
        )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sparsity": 1.0}, ValueError, r"sparsity must be a float in \[0, 1\)"),
        ({"rounds": 0}, ValueError, "rounds must be an int >= 1"),
        ({"rewind_step": -1}, ValueError, "rewind_step must be an int >= 0"),
        ({"scope": "all"}, ValueError, "scope must be one of 'global', 'layer'; got 'all'"),
        ({"train": None}, TypeError, "train must be callable"),
        ({"exclude": ["fc"]}, ValueError, "allowed names: 0"),
    ],
)
def test_bad_input_leaves_the_model_unchanged(kwargs, error, message):
    net = one_layer([1.0, 2.0, 3.0, 4.0])
    args = {"train": fake_training([1.0, 1.0, 1.0, 1.0]), "sparsity": 0.5}
    args.update(kwargs)
    with pytest.raises(error, match=message):
        find_ticket(net, **args)
    assert not parametrize.is_parametrized(net[0])
    assert net[0].weight.tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_reinitialize_draws_from_the_layers_own_initializer_and_keeps_masks():
    torch.manual_seed(0)
    ticket = nn.Sequential(nn.Linear(6, 3))
    mask = torch.rand(3, 6) > 0.5
    from minicompress.pruning import apply_mask

    apply_mask(ticket[0], mask)
    control = reinitialize(copy.deepcopy(ticket), seed=7)
    # nn.Linear's constructor runs reset_parameters once: the same draw under the same seed.
    torch.manual_seed(7)
    reference = nn.Linear(6, 3)
    torch.testing.assert_close(control[0].weight, reference.weight * mask)
    torch.testing.assert_close(control[0].bias, reference.bias)
    assert torch.equal(get_mask(control[0]), mask)
    assert not torch.equal(control[0].weight, ticket[0].weight)


def test_reinitialize_resets_unmasked_layers_and_batchnorm_too():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with torch.no_grad():
        net[1].weight.fill_(5.0)
        net[1].running_mean.fill_(3.0)
    reinitialize(net, seed=0)
    assert torch.equal(net[1].weight, torch.ones(2))
    assert torch.equal(net[1].running_mean, torch.zeros(2))
    with pytest.raises(TypeError, match="seed must be an int, got '0'"):
        reinitialize(net, seed="0")
