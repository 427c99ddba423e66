"""Tests of minicompress.quantization.ternary: TWN and TTQ, pinned to the papers' formulas."""

import math

import pytest
import torch
from torch import nn

from minicompress import measure, train
from minicompress.pruning import apply_mask
from minicompress.quantization import (
    TernaryWeight,
    TrainedTernaryWeight,
    ternarize,
    ttq_ternarize,
    twn_ternarize,
)

from model_state import snapshot, unchanged


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


# A 4x4 weight written out for TWN:
#   mean|W| = (0.1+0.8+0.3+1.2 + 0.05+0.6+0.9+0.2 + 0.4+0.0+1.0+0.7 + 0.15+0.5+0.35+0.25) / 16
#           = 7.5 / 16 = 0.46875,  Δ = 0.7·0.46875 = 0.328125
#   |W| > Δ: 0.8, 1.2, 0.6, 0.9, 0.4, 1.0, 0.7, 0.5, 0.35 -> α = 6.45 / 9 = 0.71666...
W44 = [
    [0.1, -0.8, 0.3, 1.2],
    [-0.05, 0.6, -0.9, 0.2],
    [0.4, 0.0, -1.0, 0.7],
    [-0.15, 0.5, 0.35, -0.25],
]
T44 = [
    [0, -1, 0, 1],
    [0, 1, -1, 0],
    [1, 0, -1, 1],
    [0, 1, 1, 0],
]


def test_twn_threshold_and_alpha_on_a_written_out_4x4_weight():
    w = torch.tensor(W44, dtype=torch.float64)
    alpha = 6.45 / 9
    expected = alpha * torch.tensor(T44, dtype=torch.float64)
    torch.testing.assert_close(twn_ternarize(w), expected)
    torch.testing.assert_close(TernaryWeight()(w), expected)


def test_twn_gradient_passes_straight_through():
    w = torch.tensor(W44, dtype=torch.float64, requires_grad=True)
    g = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    TernaryWeight()(w).backward(g)
    torch.testing.assert_close(w.grad, g)


def test_ttq_values_and_all_three_gradients_equal_the_papers_formulas():
    w = torch.tensor(
        [[1.0, -0.04, 0.5, -2.0, 0.08, -0.3]], dtype=torch.float64, requires_grad=True
    )
    w_p = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    w_n = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], dtype=torch.float64)
    out = ttq_ternarize(w, w_p, w_n, threshold=0.05)  # Δ = 0.05·2 = 0.1
    out.backward(g)
    # I_p = {0, 2}, I_n = {3, 5}, the rest |W| <= Δ.
    torch.testing.assert_close(
        out.detach(),
        torch.tensor([[0.5, 0.0, 0.5, -0.25, 0.0, -0.25]], dtype=torch.float64),
    )
    # TTQ eq. 7 (with the chain rule's sign for W_n) and eq. 8, written out.
    torch.testing.assert_close(w_p.grad, torch.tensor(1.0 + 3.0, dtype=torch.float64))
    torch.testing.assert_close(
        w_n.grad, torch.tensor(-(4.0 + 6.0), dtype=torch.float64)
    )
    torch.testing.assert_close(
        w.grad,
        torch.tensor(
            [[0.5 * 1, 2, 0.5 * 3, 0.25 * 4, 5, 0.25 * 6]], dtype=torch.float64
        ),
    )


def test_ttq_scale_gradients_equal_autograd_of_the_plain_ternary_function():
    # Reference: W_p·1[W > Δ] − W_n·1[W < −Δ] built with ordinary torch ops.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    g = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    ours = TrainedTernaryWeight(0.3, 0.7).double()
    ours(w).backward(g)
    w_p = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w_n = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    delta = 0.05 * w.abs().max()
    (g * (w_p * (w > delta) - w_n * (w < -delta))).sum().backward()
    torch.testing.assert_close(ours.positive_scale.grad, w_p.grad.float().double())
    torch.testing.assert_close(ours.negative_scale.grad, w_n.grad.float().double())


def test_ttq_starts_from_the_mean_weight_on_each_side_of_the_threshold():
    w = torch.tensor([[1.0, -0.04, 0.5, -2.0, 0.08, -0.3]])
    ttq = TrainedTernaryWeight.from_weight(w)
    assert float(ttq.positive_scale.detach()) == pytest.approx(0.75)  # (1.0 + 0.5) / 2
    assert float(ttq.negative_scale.detach()) == pytest.approx(1.15)  # (2.0 + 0.3) / 2


@pytest.mark.parametrize("method", ["twn", "ttq"])
def test_ternary_layers_take_three_values_and_pack_to_two_bits(method):
    net = small_net()
    before = snapshot(net)
    ternary = ternarize(net, method)
    assert unchanged(net, before)
    for layer in (ternary[0], ternary[2]):
        w = layer.weight.detach()
        assert len(w.unique()) <= 3 and bool((w == 0).any())
        part = layer.parametrizations.weight[-1]
        packed = part.pack(layer.parametrizations.weight.original)
        assert torch.equal(part.unpack(packed), w)
        assert len(packed["codes"]) == math.ceil(w.numel() * 2 / 8)


def test_ttq_scales_are_trained_by_fit():
    net = ternarize(small_net(), "ttq")
    start = float(net[0].parametrizations.weight[0].positive_scale.detach())
    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(4)]
    train.fit(net, data, epochs=2, lr=1e-2, progress=False)
    assert float(net[0].parametrizations.weight[0].positive_scale.detach()) != start


def test_a_scale_driven_to_zero_or_below_is_a_clear_error():
    net = ternarize(small_net(), "ttq")
    with torch.no_grad():
        net[2].parametrizations.weight[0].negative_scale.fill_(-0.01)
    with pytest.raises(
        ValueError, match="negative_scale was driven to -0.01.*must stay > 0"
    ):
        net(torch.randn(2, 6))
    with pytest.raises(
        ValueError, match="positive_scale must be a finite number > 0, got 0"
    ):
        TrainedTernaryWeight(0.0, 1.0)


def test_ternary_weights_compose_with_a_pruning_mask():
    net = small_net()
    mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    apply_mask(net[0], mask)
    ternary = ternarize(net, "twn")
    assert torch.equal(
        ternary[0].weight.detach()[~mask], torch.zeros(int((~mask).sum()))
    )


def test_packed_file_of_a_ternary_linear_layer_is_about_two_bits_per_weight():
    net = nn.Sequential(nn.Linear(256, 512, bias=False))
    size = measure.size_bytes(ternarize(net, "twn"), "packed")
    payload = 256 * 512 * 2 // 8
    assert payload <= size < 1.06 * payload


def test_unknown_method_and_bad_threshold_are_clear_errors_and_the_model_is_unchanged():
    net = small_net()
    before = snapshot(net)
    with pytest.raises(
        ValueError, match="method must be one of 'twn', 'ttq'; got 'tnn'"
    ):
        ternarize(net, "tnn")
    with pytest.raises(ValueError, match="nothing to quantize"):
        ternarize(nn.Sequential(nn.Tanh()))
    with pytest.raises(
        ValueError, match=r"threshold must be a finite number in \(0, 1\)"
    ):
        TrainedTernaryWeight(1.0, 1.0, threshold=1.5)
    assert unchanged(net, before)
