"""Tests of minicompress.quantization.mixed_precision: per-layer widths, sensitivity, greedy allocation."""

import pytest
import torch
from torch import nn

from minicompress import measure
from minicompress.quantization import (
    WEIGHT_SCHEMES,
    FakeQuantWeight,
    KMeansWeight,
    allocate_bits,
    layer_sensitivity,
    quantization_error,
    quantize_mixed,
    weight_bytes,
)

from model_state import snapshot, unchanged


def three_layers():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4)
    )


def test_each_layer_gets_its_own_width_and_the_others_stay_float():
    net = three_layers()
    q = quantize_mixed(net, {"0": 8, "2": 2})
    assert q[0].parametrizations.weight[0].bits == 8
    assert q[2].parametrizations.weight[0].bits == 2
    assert isinstance(q[0].parametrizations.weight[0], FakeQuantWeight)
    assert torch.equal(q[4].weight, net[4].weight)  # not named: float


@pytest.mark.parametrize("scheme", sorted(WEIGHT_SCHEMES))
def test_every_scheme_quantizes_at_its_smallest_width_and_packs(scheme):
    net = three_layers()
    spec = WEIGHT_SCHEMES[scheme]
    q = quantize_mixed(net, spec.min_bits, scheme=scheme)
    for layer in (q[0], q[2], q[4]):
        part = layer.parametrizations.weight[-1]
        assert torch.equal(
            part.unpack(part.pack(layer.parametrizations.weight.original)),
            layer.weight.detach(),
        )
    assert measure.size_bytes(q, "packed") < measure.size_bytes(net)


def test_layer_sensitivity_is_the_score_drop_with_one_layer_quantized():
    net = three_layers()
    x = torch.randn(64, 16)
    reference = net(x).detach()

    def score(model):  # closeness to the float output
        return -float((model(x).detach() - reference).pow(2).mean())

    drops = layer_sensitivity(net, score, bits=(2, 4, 8))
    assert set(drops) == {"0", "2", "4"}
    for name, by_bits in drops.items():
        expected = -score(quantize_mixed(net, {name: 2}))  # base score is 0
        assert by_bits[2] == pytest.approx(expected)
        assert by_bits[2] > by_bits[4] > by_bits[8] >= 0


def test_quantization_error_is_the_relative_squared_weight_error():
    net = three_layers()
    errors = quantization_error(net, bits=(2, 8))
    w = net[2].weight.detach()
    expected = float(((FakeQuantWeight(2)(w) - w) ** 2).sum() / (w**2).sum())
    assert errors["2"][2] == pytest.approx(expected)
    assert all(e[8] < e[2] for e in errors.values())
    km = quantization_error(net, bits=2, scheme="kmeans")["0"][2]
    w = net[0].weight.detach()
    assert km == pytest.approx(
        float(
            ((KMeansWeight.from_weight(w, 2)(w).detach() - w) ** 2).sum() / (w**2).sum()
        )
    )


def test_greedy_allocation_lowers_the_cheapest_layer_per_byte_first():
    net = three_layers()  # weights: 512, 256, 32; outputs 32, 8, 4
    sensitivity = {
        "0": {8: 0.0, 4: 0.01, 2: 0.30},
        "2": {8: 0.0, 4: 0.02, 2: 0.05},
        "4": {8: 0.0, 4: 0.50, 2: 0.90},
    }
    scales = 4 * (32 + 8 + 4)  # one float32 scale per output channel, whatever the width
    full = weight_bytes(net, {"0": 8, "2": 8, "4": 8})
    assert full == 512 + 256 + 32 + scales
    # Worked by hand. Moves as (Δcost / Δbytes): 0:8->4 0.01/256, 2:8->4 0.02/128, 4:8->4 0.5/16.
    # Budget 600 -> take 0:8->4 (saves 256, total 544).
    assert allocate_bits(net, sensitivity, 600 + scales) == {"0": 4, "2": 8, "4": 8}
    # Budget 420: next 2:8->4 (0.02/128 = 1.6e-4) beats 0:4->2 (0.29/128 = 2.3e-3) -> 416.
    assert allocate_bits(net, sensitivity, 420 + scales) == {"0": 4, "2": 4, "4": 8}
    # Budget 380: next 2:4->2 (0.03/64 = 4.7e-4) -> 352.
    assert allocate_bits(net, sensitivity, 380 + scales) == {"0": 4, "2": 2, "4": 8}
    allocation = allocate_bits(net, sensitivity, 300 + scales)
    assert weight_bytes(net, allocation) <= 300 + scales


def test_a_codebook_is_part_of_the_price_of_a_width():
    net = three_layers()
    # k-means: 512·2/8 codes + 4 centroids, 512·8/8 + 256 centroids of 4 bytes.
    assert weight_bytes(net, {"0": 2}, "kmeans") == 128 + 16
    assert weight_bytes(net, {"0": 8}, "kmeans") == 512 + 1024
    # Moves 8 -> 4 bits: "0" saves 256 bytes of codes + 960 of codebook (0.05 / 1216), "4"
    # saves 16 + 960 (0.01 / 976): "4" is cheaper per byte. Pricing the codes alone would
    # have chosen "0" (0.05 / 256 against 0.01 / 16).
    sensitivity = {"0": {8: 0.0, 4: 0.05}, "4": {8: 0.0, 4: 0.01}}
    budget = weight_bytes(net, {"0": 8, "4": 8}, "kmeans") - 100
    assert allocate_bits(net, sensitivity, budget, scheme="kmeans") == {"0": 8, "4": 4}


def test_binary_with_four_bits_is_a_clear_error_and_the_model_is_unchanged():
    net = three_layers()
    before = snapshot(net)
    with pytest.raises(
        ValueError,
        match="scheme 'xnor' stores exactly 1 bit per weight: bits must be 1, got 4",
    ):
        quantize_mixed(net, 4, scheme="xnor")
    with pytest.raises(
        ValueError,
        match=r"scheme 'twn' stores exactly 2 bits per weight: bits\['0'\] must be 2, got 3",
    ):
        quantize_mixed(net, {"0": 3}, scheme="twn")
    with pytest.raises(
        ValueError,
        match=r"scheme 'uniform' stores 2 to 16 bits per weight: bits must be an int in \[2, 16\], got 1",
    ):
        quantize_mixed(net, 1)
    with pytest.raises(ValueError, match="scheme must be one of"):
        quantize_mixed(net, 4, scheme="apot")
    with pytest.raises(
        ValueError, match="layer '4': a 8-bit codebook has 256 centroids"
    ):
        quantize_mixed(net, 8, scheme="kmeans")
    with pytest.raises(ValueError, match="bits is an empty dict: nothing to quantize"):
        quantize_mixed(net, {})
    with pytest.raises(
        ValueError, match=r"bits names \['fc9'\], not quantizable layers"
    ):
        quantize_mixed(net, {"fc9": 4})
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_mixed(nn.Sequential(nn.ReLU()), 4)
    assert unchanged(net, before)


def test_a_budget_below_the_smallest_widths_is_refused():
    net = three_layers()
    sensitivity = {"0": {8: 0.0, 2: 1.0}, "2": {8: 0.0, 2: 1.0}}
    with pytest.raises(ValueError, match="budget_bytes=10 is below the 352 bytes"):
        allocate_bits(net, sensitivity, 10)
    with pytest.raises(ValueError, match="sensitivity names 'x'"):
        allocate_bits(net, {"x": {8: 0.0}}, 100)


def test_bytes_left_after_a_large_step_are_spent_raising_layers_again():
    net = three_layers()  # weights: 512, 256, 32
    sensitivity = {"0": {8: 0.0, 2: 0.1}, "2": {8: 0.0, 4: 0.5}, "4": {8: 0.0, 4: 0.001}}
    scales = 4 * (32 + 8 + 4)
    # Descent to 700 bytes of codes: "4" 8->4 first (0.001/16), still 784; then "0" 8->2
    # (0.1/384), 400. Refill: 300 bytes of room; "4" back to 8 costs 16 and removes 0.001.
    assert allocate_bits(net, sensitivity, 700 + scales) == {"0": 2, "2": 8, "4": 8}
