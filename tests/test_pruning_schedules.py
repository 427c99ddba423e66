"""Tests of minicompress.pruning.schedules against the closed forms of the two papers."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from minicompress import train
from minicompress.pruning import (
    GradualPruning,
    get_mask,
    polynomial_sparsity,
    prune_iteratively,
    sparsity,
)


def net_of_1000_weights():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 10))  # 800 + 200


# Zhu & Gupta eq. (1) with s_i = 0, s_f = 0.9, t0 = 10, n = 4, dt = 5, worked by hand:
# s = 0.9 - 0.9 * (1 - j / 4) ** 3 at t = 10 + 5 j.
@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (10, 0.0),
        (15, 0.5203125),  # 0.9 - 0.9 * 0.421875
        (20, 0.7875),  # 0.9 - 0.9 * 0.125
        (25, 0.8859375),  # 0.9 - 0.9 * 0.015625
        (30, 0.9),
        (1000, 0.9),
    ],
)
def test_polynomial_schedule_matches_the_closed_form(step, expected):
    value = polynomial_sparsity(step, 0.9, begin_step=10, n_updates=4, frequency=5)
    assert value == pytest.approx(expected, abs=1e-12)


def test_polynomial_schedule_with_an_initial_sparsity():
    # s_i = 0.5, s_f = 0.8, halfway: 0.8 - 0.3 * 0.125 = 0.7625.
    value = polynomial_sparsity(
        2, 0.8, begin_step=0, n_updates=2, frequency=2, initial_sparsity=0.5
    )
    assert value == pytest.approx(0.7625)


def test_gradual_pruning_follows_the_schedule_and_hits_the_final_sparsity_exactly():
    net = net_of_1000_weights()
    schedule = GradualPruning(0.9, begin_step=10, n_updates=4, frequency=5)
    assert schedule.end_step == 30
    seen = {}
    for step in range(40):
        schedule.after_step(net, step)
        seen[step] = sparsity(net)
    # Only update steps change the masks, each to round(s_t * 1000) zeros.
    assert seen[9] == 0.0 and seen[14] == 0.0
    assert seen[15] == round(0.5203125 * 1000) / 1000
    assert seen[20] == round(0.7875 * 1000) / 1000
    assert seen[25] == seen[29] == round(0.8859375 * 1000) / 1000
    assert seen[30] == 0.9 and seen[39] == 0.9


def test_gradual_pruning_runs_as_a_fit_callback_and_pruned_weights_stay_zero():
    torch.manual_seed(0)
    net = net_of_1000_weights()
    data = TensorDataset(torch.randn(64, 40), torch.randint(0, 10, (64,)))
    loader = DataLoader(data, batch_size=8)  # 8 steps per epoch
    schedule = GradualPruning(0.75, begin_step=0, n_updates=3, frequency=4)
    masks = {}

    class Spy:
        def after_step(self, model, step):
            masks[step] = get_mask(model[0]).clone()

    train.fit(net, loader, 2, lr=1e-2, progress=False, callbacks=[schedule, Spy()])
    assert sparsity(net) == 0.75
    # A weight pruned at one update is never alive again.
    assert not (masks[15] & ~masks[4]).any()


def test_gradual_pruning_per_layer_reaches_the_target_in_every_layer():
    net = net_of_1000_weights()
    schedule = GradualPruning(
        0.5, begin_step=0, n_updates=1, frequency=1, scope="layer"
    )
    schedule.after_step(net, 0)
    schedule.after_step(net, 1)
    assert sparsity(net, per_layer=True) == {"0": 0.5, "2": 0.5}


def test_iterative_pruning_targets_the_geometric_steps_and_fine_tunes_each_round():
    net = net_of_1000_weights()
    seen = []
    prune_iteratively(
        net, 0.875, rounds=3, fine_tune=lambda m: seen.append(sparsity(m))
    )
    # 1 - 0.125 ** (r / 3) = 0.5, 0.75, 0.875: half of the survivors each round.
    assert seen == [0.5, 0.75, 0.875]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"final_sparsity": 1.0}, r"final_sparsity must be a float in \[0, 1\)"),
        ({"initial_sparsity": 0.95}, "initial_sparsity must be <= final_sparsity"),
        ({"n_updates": 0}, "n_updates must be an int >= 1, got 0"),

        ({"begin_step": -1}, "begin_step must be an int >= 0, got -1"),
        ({"scope": "model"}, "scope must be one of 'global', 'layer'; got 'model'"),
        ({"method": "l1"}, "method must be one of 'magnitude', 'random'; got 'l1'"),
    ],
)
def test_bad_schedules_are_rejected_when_built(kwargs, message):
    args = dict(final_sparsity=0.9, begin_step=0, n_updates=4, frequency=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        GradualPruning(**args)


def test_a_schedule_of_the_wrong_kind_is_a_type_error():
    with pytest.raises(TypeError, match="frequency must be an int >= 1, got 2.5"):
        GradualPruning(0.9, begin_step=0, n_updates=4, frequency=2.5)
    with pytest.raises(TypeError, match="exclude must hold str names"):
        GradualPruning(0.9, begin_step=0, n_updates=4, frequency=5, exclude=[3])


def test_iterative_pruning_rejects_bad_input_before_changing_the_model():
    net = net_of_1000_weights()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        prune_iteratively(net, 0.5, rounds=0, fine_tune=lambda m: None)
    with pytest.raises(TypeError, match="fine_tune must be callable"):
        prune_iteratively(net, 0.5, rounds=2, fine_tune=None)
    with pytest.raises(ValueError, match="allowed names: 0, 2"):
        prune_iteratively(net, 0.5, rounds=2, fine_tune=lambda m: None, exclude=["fc"])
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
