"""Tests of minicompress.quantization.power_of_two: {0, ±2^k} weights and power-of-two scales."""

import math

import pytest
import torch
from torch import nn

from minicompress import measure
from minicompress.quantization import (
    FakeQuantWeight,
    PowerOfTwoScaleWeight,
    PowerOfTwoWeight,
    quantize_power_of_two,
    quantize_power_of_two_scales,
    scale_rounding_error,
)

from model_state import snapshot, unchanged


# The rounding table at 3 bits with max|W| = 1 (k_max = 0, k_min = -2: levels 0, 1/4, 1/2, 1).
#   |W|    log2|W|   log domain: round(log2)   linear domain: nearest level
#   1.00    0.000     2^0  = 1                 1
#   0.72   -0.474     2^0  = 1                 1/2   (0.72 < 0.75 = midpoint of 1/2 and 1)
#   0.70   -0.515     2^-1 = 1/2               1/2
#   0.30   -1.737     2^-2 = 1/4               1/4   (0.30 < 0.375)
#   0.16   -2.644     0 (exponent -3 < k_min)  1/4   (0.16 > 0.125 = half of 1/4)
#   0.10   -3.322     0                        0
#   0.00    -inf      0                        0
TABLE_W = [1.0, 0.72, 0.7, 0.3, 0.16, 0.1, 0.0, -0.72, -0.16]
TABLE_LOG = [1.0, 1.0, 0.5, 0.25, 0.0, 0.0, 0.0, -1.0, 0.0]
TABLE_LINEAR = [1.0, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0, -0.5, -0.25]


@pytest.mark.parametrize(
    "rounding, expected", [("log", TABLE_LOG), ("linear", TABLE_LINEAR)]
)
def test_power_of_two_rounding_table(rounding, expected):
    w = torch.tensor(TABLE_W, dtype=torch.float64)
    out = PowerOfTwoWeight(3, rounding)(w)
    torch.testing.assert_close(
        out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=0
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_b_bits_give_two_to_the_b_minus_one_minus_one_exponents_below_the_largest(bits):
    w = torch.tensor([1.0] + [2.0**-k for k in range(1, 20)])
    out = PowerOfTwoWeight(bits, "log")(w)
    nonzero = out[out != 0]
    assert len(nonzero.unique()) == 2 ** (bits - 1) - 1
    assert float(nonzero.min()) == 2.0 ** -(2 ** (bits - 1) - 2)


def test_the_largest_exponent_follows_the_rounding_of_the_largest_weight():
    # max|W| = 1.45: log2 = 0.536 rounds to 1 in the log domain (2), but 1.45 < 1.5 is
    # nearer 1 in the linear domain.
    w = torch.tensor([1.45, 0.5])
    assert float(PowerOfTwoWeight(4, "log")(w)[0]) == 2.0
    assert float(PowerOfTwoWeight(4, "linear")(w)[0]) == 1.0


def test_linear_rounding_never_has_a_larger_error_on_the_same_levels():
    w = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    w = torch.cat([w, torch.tensor([1.0])])  # max 1: both roundings put k_max at 0
    log_error = (PowerOfTwoWeight(4, "log")(w) - w).abs()
    linear_error = (PowerOfTwoWeight(4, "linear")(w) - w).abs()
    assert (
        bool((linear_error <= log_error + 1e-7).all())
        and linear_error.sum() < log_error.sum()
    )


def test_gradient_passes_straight_through():
    w = torch.tensor([0.9, -0.3, 0.01], requires_grad=True)
    PowerOfTwoWeight(4)(w).backward(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(w.grad, torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("rounding", ["log", "linear"])
@pytest.mark.parametrize("bits", [2, 4, 6])
def test_packed_codes_rebuild_the_weight_exactly(bits, rounding):
    torch.manual_seed(bits)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    quantized = quantize_power_of_two(net, bits, rounding)
    for layer in (quantized[0], quantized[2]):
        part = layer.parametrizations.weight[0]
        packed = part.pack(layer.parametrizations.weight.original)
        assert torch.equal(part.unpack(packed), layer.weight.detach())
        assert len(packed["codes"]) == math.ceil(layer.weight.numel() * bits / 8)


def test_power_of_two_scale_is_the_float_scale_rounded_up_or_to_nearest():
    w = torch.tensor([[0.7, -0.3], [0.05, 0.02]])
    float_scale, _ = FakeQuantWeight(4).qparams(w)  # max|W| / 7.5 per row
    torch.testing.assert_close(float_scale, torch.tensor([0.7 / 7.5, 0.05 / 7.5]))
    ceil, _ = PowerOfTwoScaleWeight(4, rounding="ceil").qparams(w)
    nearest, _ = PowerOfTwoScaleWeight(4, rounding="nearest").qparams(w)
    # 0.0933 -> 2^-3 up, 2^-3 nearest (log2 = -3.42); 0.00667 -> 2^-7 up, 2^-7 nearest (-7.23).
    torch.testing.assert_close(ceil, torch.tensor([2.0**-3, 2.0**-7]))
    torch.testing.assert_close(nearest, torch.tensor([2.0**-3, 2.0**-7]))
    w2 = torch.tensor(
        [[0.1, -0.02]]
    )  # s = 0.01333: log2 = -6.23 -> 2^-6 up, 2^-6 nearest
    assert float(PowerOfTwoScaleWeight(4, rounding="ceil").qparams(w2)[0]) == 2.0**-6
    w3 = torch.tensor([[0.15]])  # s = 0.02: log2 = -5.64 -> 2^-5 up, 2^-6 nearest
    assert float(PowerOfTwoScaleWeight(4, rounding="nearest").qparams(w3)[0]) == 2.0**-6


def test_scale_rounding_costs_error_and_ceil_never_clips():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    errors = scale_rounding_error(w, bits=8)
    assert errors["float"] <= errors["ceil"] <= 4 * errors["float"] + 1e-12
    assert errors["float"] <= errors["nearest"]
    q = quantize_power_of_two_scales(nn.Sequential(nn.Linear(64, 32)), bits=4)
    part = q[0].parametrizations.weight[0]
    scale, _ = part.qparams(q[0].parametrizations.weight.original)
    assert torch.equal(torch.log2(scale), torch.log2(scale).round())  # powers of two
    packed = part.pack(q[0].parametrizations.weight.original)
    assert torch.equal(part.unpack(packed), q[0].weight.detach())


def test_packed_file_of_power_of_two_weights_is_about_b_bits_per_weight():
    net = nn.Sequential(nn.Linear(256, 512, bias=False))
    size = measure.size_bytes(quantize_power_of_two(net, bits=4), "packed")
    payload = 256 * 512 * 4 // 8
    assert payload <= size < 1.03 * payload


def test_bad_arguments_are_clear_errors_and_the_model_is_unchanged():
    net = nn.Sequential(nn.Linear(4, 2))
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 8\], got 1"):
        quantize_power_of_two(net, bits=1)
    with pytest.raises(
        ValueError, match="rounding must be one of 'log', 'linear'; got 'floor'"
    ):
        quantize_power_of_two(net, rounding="floor")
    with pytest.raises(ValueError, match="rounding must be one of 'ceil', 'nearest'"):
        quantize_power_of_two_scales(net, rounding="log")
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_power_of_two(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="per_channel must be True or False"):
        quantize_power_of_two_scales(net, per_channel="yes")
    assert unchanged(net, before)
