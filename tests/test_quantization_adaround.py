"""Tests of minicompress.quantization.adaround: adaptive rounding (Nagel et al. 2020)."""

import math

import pytest
import torch
from torch import nn

from minicompress import measure
from minicompress.quantization import (
    GAMMA,
    ActQuant,
    ZETA,
    AdaRoundWeight,
    FakeQuantWeight,
    adaround,
    annealed_beta,
    quantize_ptq,
    quantize_weights,
    rectified_sigmoid,
    rounding_regularizer,
)

from model_state import snapshot, unchanged


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def correlated_inputs(n=128, seed=0):
    # Correlated features: the case where rounding errors of one neuron's weights interact.
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 4, generator=gen)
    return base @ torch.randn(4, 12, generator=gen) + 0.1 * torch.randn(n, 12, generator=gen)


def test_the_constants_are_the_papers():
    assert (ZETA, GAMMA) == (1.1, -0.1)


def test_rectified_sigmoid_at_literal_values():
    # σ(0) = 1/2 -> 0.6 - 0.1 = 0.5; σ(ln 3) = 3/4 -> 0.8; σ(-ln 3) = 1/4 -> 0.2;
    # σ(±10) ≈ 1, 0 -> 1.1 and -0.1, clipped to 1 and 0.
    v = torch.tensor([0.0, math.log(3), -math.log(3), 10.0, -10.0], dtype=torch.float64)
    expected = torch.tensor([0.5, 0.8, 0.2, 1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rectified_sigmoid(v), expected, rtol=0, atol=1e-12)


def test_rounding_regularizer_at_literal_values():
    # h = 0.5, 0.8, 1: 1 - |2h - 1|^β = 1, 1 - 0.6^β, 0
    v = torch.tensor([0.0, math.log(3), 10.0], dtype=torch.float64)
    torch.testing.assert_close(rounding_regularizer(v, 2.0), torch.tensor(1 + 0.64, dtype=torch.float64))
    torch.testing.assert_close(rounding_regularizer(v, 20.0), torch.tensor(2 - 0.6**20, dtype=torch.float64))


def test_beta_is_off_during_warm_up_then_falls_linearly_from_20_to_2():
    assert annealed_beta(0, 100) is None and annealed_beta(19, 100) is None
    assert annealed_beta(20, 100) == 20.0
    assert annealed_beta(60, 100) == pytest.approx(11.0)
    assert annealed_beta(100, 100) == pytest.approx(2.0)
    assert annealed_beta(0, 10, warm_up=0.0) == 20.0


def test_the_soft_weight_starts_at_the_float_weight():
    # max |W| = 0.9 sits at W/s = -7.5, inside the 4-bit grid [-8, 7] (+7.5 would clip to 7)
    w = torch.tensor([[0.31, -0.52, 0.07, -0.9]], dtype=torch.float64)
    scale, zero_point = FakeQuantWeight(4, axis=None).qparams(w)
    quantizer = AdaRoundWeight(w, scale, zero_point, 4, -8, 7, axis=None)
    torch.testing.assert_close(quantizer(w), w, rtol=0, atol=1e-6)


def test_every_weight_is_rounded_down_or_up_never_further():
    model, x = small_net(), correlated_inputs()
    nearest = quantize_weights(model, bits=3)
    rounded = adaround(nearest, [x], iterations=200, lr=1e-2)
    moved = 0
    for index in (0, 2):
        w, quantizer = model[index].weight.detach(), rounded[index].parametrizations.weight[0]
        assert isinstance(quantizer, AdaRoundWeight) and quantizer.hard
        s = quantizer.scale.reshape(-1, 1)
        q = rounded[index].weight.detach() / s
        floor, ceil = torch.floor(w * (1 / s)), torch.ceil(w * (1 / s))
        down, up = torch.isclose(q, floor.clamp(-4, 3)), torch.isclose(q, ceil.clamp(-4, 3))
        assert bool((down | up).all())
        moved += int((~torch.isclose(q, torch.round(w * (1 / s)).clamp(-4, 3))).sum())
    assert moved > 0  # it did not just reproduce rounding to nearest


def test_reconstruction_error_is_at_most_that_of_rounding_to_nearest():
    layer = nn.Sequential(nn.Linear(12, 8))
    torch.manual_seed(1)
    x = correlated_inputs(256, seed=1)
    nearest = quantize_weights(layer, bits=3)
    rounded = adaround(nearest, [x[:128], x[128:]], iterations=500, lr=1e-2)
    with torch.no_grad():
        error = lambda m: float((m(x) - layer(x)).pow(2).sum())
        assert error(rounded) <= error(nearest)


def test_hard_rounding_packs_exactly_and_to_b_bits():
    model, x = small_net(), correlated_inputs()
    nearest = quantize_weights(model, bits=4)
    rounded = adaround(nearest, [x], iterations=50)
    for index in (0, 2):
        quantizer = rounded[index].parametrizations.weight[0]
        w = rounded[index].parametrizations.weight.original.detach()
        assert torch.equal(quantizer.unpack(quantizer.pack(w)), quantizer(w))
        assert quantizer.pack(w)["codes"].numel() == math.ceil(w.numel() * 4 / 8)  # 4 bits each
    assert measure.size_bytes(rounded, "packed") == measure.size_bytes(nearest, "packed")


def test_a_soft_quantizer_does_not_pack():
    w = torch.randn(2, 3)
    quantizer = AdaRoundWeight(w, *FakeQuantWeight(4).qparams(w), 4, -8, 7, axis=0)
    with pytest.raises(ValueError, match="harden"):
        quantizer.pack(w)


def test_static_ptq_model_keeps_its_activation_quantizers_and_is_reproducible():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3, groups=2)).eval()
    data = [torch.rand(4, 1, 8, 8) for _ in range(2)]
    quantized = quantize_ptq(model, data, weight_bits=4)
    a, b = (adaround(quantized, data, iterations=30, seed=3) for _ in range(2))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))
    count = lambda m, kind: sum(isinstance(module, kind) for module in m.modules())
    assert count(a, ActQuant) == count(quantized, ActQuant) == 2
    assert count(a, AdaRoundWeight) == count(quantized, FakeQuantWeight) == 2


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"iterations": 0}, ValueError, "iterations must be an int >= 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int >= 1"),
        ({"lr": 0}, ValueError, "lr must be a finite number > 0"),
        ({"reg_weight": -1}, ValueError, "reg_weight must be a finite number >= 0"),
        ({"beta": 20}, TypeError, "beta must be a pair"),
        ({"beta": (2, 20)}, ValueError, "beta must fall"),
        ({"beta": (20, 0)}, ValueError, r"beta\[1\] must be a finite number > 0"),
        ({"warm_up": 1.0}, ValueError, r"warm_up must be a float in \[0, 1\)"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"batches": 0}, ValueError, "batches must be an int >= 1"),
    ],
)
def test_bad_arguments_are_refused_and_the_model_is_unchanged(kwargs, error, match):
    quantized = quantize_weights(small_net(), bits=4)
    before = snapshot(quantized)
    with pytest.raises(error, match=match):
        adaround(quantized, [correlated_inputs()], **kwargs)
    assert unchanged(quantized, before)


@pytest.mark.parametrize(
    "data,error,match",
    [
        ([], ValueError, "yielded no batches"),
        (iter([torch.randn(4, 12)]), TypeError, "re-iterable"),
        ([torch.full((4, 12), float("inf"))], ValueError, "NaN or infinite"),
    ],
)
def test_bad_calibration_data_is_refused_and_the_model_is_unchanged(data, error, match):
    quantized = quantize_weights(small_net(), bits=4)
    before = snapshot(quantized)
    with pytest.raises(error, match=match):
        adaround(quantized, data)
    assert unchanged(quantized, before)


def test_a_model_without_fake_quantized_weights_is_refused():
    model = small_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match="nothing to round"):
        adaround(model, [correlated_inputs()])
    assert unchanged(model, before)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        adaround(None, [correlated_inputs()])
