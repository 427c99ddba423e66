"""Tests of minicompress.pruning.at_init: each score on a small net worked by hand."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import models
from minicompress.pruning import (
    apply_mask,
    get_mask,
    grasp_scores,
    prunable_layers,
    prune_by_scores,
    prune_grasp,
    prune_snip,
    prune_synflow,
    snip_scores,
    sparsity,
    synflow_scores,
)


def linear(*rows):
    layer = nn.Linear(len(rows[0]), len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return layer


def half_squared_error(outputs, targets):
    return 0.5 * ((outputs.squeeze(-1) - targets) ** 2).sum()


def test_snip_scores_of_a_hand_worked_linear_classifier():
    net = nn.Sequential(linear([2.0, -1.0], [4.0, -2.0]))
    # x = (1, 2): logits (0, 0), softmax (1/2, 1/2), label 0, so dL/dz = (-1/2, 1/2) and
    # g = dL/dz x^T = [[-1/2, -1], [1/2, 1]]; |g * w| = [[1, 1], [2, 2]].
    scores = snip_scores(net, torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    torch.testing.assert_close(scores["0"], torch.tensor([[1.0, 1.0], [2.0, 2.0]]))


def test_grasp_scores_of_a_hand_worked_two_layer_net():
    # f = v (w . x), L = (f - t)^2 / 2, w = (1, 2), v = 2, x = (1, -1), t = 0:
    # a = w.x = -1, r = v a - t = -2, g_w = r v x = (-4, 4), g_v = r a = 2,
    # (Hg)_w = v^2 x (x.g_w) + (a v + r) x g_v = -32 x - 8 x = (-40, 40),
    # (Hg)_v = (a v + r)(x.g_w) + a^2 g_v = 32 + 2 = 34.
    # Keep-scores w * Hg = (-40, 80) and v * Hg = 68 (the paper's S is minus these).
    net = nn.Sequential(linear([1.0, 2.0]), linear([2.0]))
    scores = grasp_scores(
        net,
        torch.tensor([[1.0, -1.0]]),
        torch.tensor([0.0]),
        loss_fn=half_squared_error,
    )
    torch.testing.assert_close(scores["0"], torch.tensor([[-40.0, 80.0]]))
    torch.testing.assert_close(scores["1"], torch.tensor([[68.0]]))


def test_grasp_hessian_gradient_product_matches_torch_autograd_functional_hvp():
    # torch.autograd.functional.hvp computes H v from the full Hessian-vector product
    # definition: an independent route to the same Hg.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2, bias=False)
    )
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    w1 = net[0].weight.detach().clone().requires_grad_()
    w2 = net[2].weight.detach().clone().requires_grad_()

    def loss(a, b):
        return nn.functional.cross_entropy(torch.tanh(x @ a.T) @ b.T, y)

    grads = torch.autograd.grad(loss(w1, w2), (w1, w2))
    _, hg = torch.autograd.functional.hvp(loss, (w1, w2), grads)
    scores = grasp_scores(net, x, y)
    torch.testing.assert_close(scores["0"], w1 * hg[0])
    torch.testing.assert_close(scores["2"], w2 * hg[1])


def test_synflow_scores_of_a_hand_worked_two_layer_net():
    # |W1| = [[1, 2], [3, 4]], |W2| = [[1/2, 1]], input (1, 1): hidden |W1| 1 = (3, 7),
    # R = 1/2 * 3 + 1 * 7. dR/d|W2| = (3, 7) -> scores (3/2, 7); dR/d|W1|_ij = |W2|_i,
    # so scores [[1/2 * 1, 1/2 * 2], [1 * 3, 1 * 4]].
    net = nn.Sequential(linear([1.0, -2.0], [3.0, 4.0]), nn.ReLU(), linear([0.5, -1.0]))
    scores = synflow_scores(net, torch.zeros(1, 2))
    torch.testing.assert_close(
        scores["0"], torch.tensor([[0.5, 1.0], [3.0, 4.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        scores["2"], torch.tensor([[1.5, 7.0]], dtype=torch.float64)
    )
    assert net[0].weight[0, 1] == -2.0  # the caller's signs are untouched


def test_masked_weights_score_zero_and_the_model_is_untouched():
    net = nn.Sequential(linear([1.0, -2.0], [3.0, 4.0]), nn.ReLU(), linear([0.5, -1.0]))
    apply_mask(net[0], torch.tensor([[True, True], [False, True]]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flow = synflow_scores(net, torch.zeros(1, 2))
    # Without w_10 the hidden unit 2 gets 4 instead of 7: R's gradient for W2 is (3, 4).
    torch.testing.assert_close(
        flow["0"], torch.tensor([[0.5, 1.0], [0.0, 4.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        flow["2"], torch.tensor([[1.5, 4.0]], dtype=torch.float64)
    )
    snip = snip_scores(
        net, torch.ones(2, 2), torch.tensor([0, 0]), loss_fn=half_squared_error
    )
    assert snip["0"][1, 0] == 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert parametrize.is_parametrized(net[0]) and net[0].weight[1, 0] == 0


def test_prune_snip_and_grasp_remove_the_lowest_scores_globally():
    torch.manual_seed(0)
    net = models.build("lenet5")
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for prune, score in ((prune_snip, snip_scores), (prune_grasp, grasp_scores)):
        ours = prune(copy.deepcopy(net), 0.8, x, y)
        reference = prune_by_scores(copy.deepcopy(net), score(net, x, y), 0.8)
        for name, module in prunable_layers(ours).items():
            assert torch.equal(
                get_mask(module), get_mask(prunable_layers(reference)[name])
            )
        total = sum(m.weight.numel() for m in prunable_layers(net).values())
        assert sparsity(ours) == round(0.8 * total) / total


def test_prune_synflow_in_one_iteration_is_one_shot_pruning_by_its_scores():
    torch.manual_seed(0)
    net = models.build("lenet300")
    example = torch.zeros(1, 1, 28, 28)
    ours = prune_synflow(copy.deepcopy(net), 0.9, example, iterations=1)
    reference = prune_by_scores(copy.deepcopy(net), synflow_scores(net, example), 0.9)
    for name, module in prunable_layers(ours).items():
        assert torch.equal(get_mask(module), get_mask(prunable_layers(reference)[name]))


def test_iterative_synflow_removes_the_exact_amount_and_keeps_every_layer_alive():
    torch.manual_seed(0)
    net = models.build("lenet300")
    total = sum(m.weight.numel() for m in prunable_layers(net).values())
    pruned = prune_synflow(net, 0.995, torch.zeros(1, 1, 28, 28), iterations=50)
    assert sparsity(pruned) == round(0.995 * total) / total
    assert all(value < 1.0 for value in sparsity(pruned, per_layer=True).values())


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda n: prune_snip(
                n, 1.5, torch.ones(2, 1, 28, 28), torch.zeros(2).long()
            ),
            ValueError,
            "amount must be a float",
        ),
        (
            lambda n: prune_snip(
                n, 0.5, torch.ones(2, 1, 28, 28), torch.zeros(3).long()
            ),
            ValueError,
            "same number of examples, got 2 and 3",
        ),
        (
            lambda n: prune_grasp(n, 0.5, [1.0], torch.zeros(1).long()),
            TypeError,
            "inputs must be a torch.Tensor, got list",
        ),
        (
            lambda n: prune_grasp(
                n, 0.5, torch.ones(1, 1, 28, 28), torch.zeros(1).long(), temperature=0
            ),
            ValueError,
            "temperature must be a finite number > 0",
        ),
        (
            lambda n: prune_synflow(n, 0.5, torch.ones(1, 1, 28, 28), iterations=0),
            ValueError,
            "iterations must be an int >= 1",
        ),
        (
            lambda n: prune_synflow(n, 0.5, (1, 28, 28)),
            TypeError,
            "example_input must be a torch.Tensor, got tuple",
        ),
        (
            lambda n: prune_synflow(n, 0.5, torch.ones(1, 1, 28, 28), exclude=["fc9"]),
            ValueError,
            "allowed names",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_the_model_unchanged(
    call, error, message
):
    torch.manual_seed(0)
    net = models.build("lenet5")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=message):
        call(net)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
