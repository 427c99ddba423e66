"""Tests of minicompress.quantization.fake_quant: the weight parametrization, activation quantizers."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress.pruning import apply_mask
from minicompress.quantization import (
    ActQuant,
    DynamicActQuant,
    FakeQuantWeight,
    MinMaxObserver,
    qrange,
)

with (
    warnings.catch_warnings()
):  # torch.ao.quantization is deprecated but still the reference
    warnings.simplefilter("ignore")
    tq = pytest.importorskip("torch.ao.quantization")


def torch_per_channel(weight, bits, axis):
    """torch.ao's symmetric per-channel weight fake quantization (its default for weights)."""
    qmin, qmax = qrange(bits, signed=True)
    observer = tq.PerChannelMinMaxObserver(
        ch_axis=axis,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        quant_min=qmin,
        quant_max=qmax,
    )
    observer(weight.detach())
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(
        weight, scale, zero_point.int(), axis, qmin, qmax
    )


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_weight_quantizer_equals_torchs_per_channel_fake_quantization(bits, axis):
    weight = torch.randn(6, 4, 3, 3, requires_grad=True)
    ours = FakeQuantWeight(bits=bits, axis=axis)(weight)
    (ours_grad,) = torch.autograd.grad(
        (ours * torch.arange(ours.numel()).view_as(ours)).sum(), weight
    )
    theirs = torch_per_channel(weight, bits, axis)
    (theirs_grad,) = torch.autograd.grad(
        (theirs * torch.arange(ours.numel()).view_as(ours)).sum(), weight
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=0)


def test_per_tensor_affine_weight_quantizer_equals_torch():
    weight = torch.randn(5, 7)
    observer = tq.MinMaxObserver(dtype=torch.quint8)
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    theirs = torch.fake_quantize_per_tensor_affine(
        weight, float(scale), int(zero_point), 0, 255
    )
    ours = FakeQuantWeight(bits=8, symmetric=False, signed=False, axis=None)(weight)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_weight_quantizer_composes_with_a_pruning_mask():
    layer = nn.Linear(6, 3)
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_mask(layer, mask)
    parametrize.register_parametrization(layer, "weight", FakeQuantWeight(bits=4))
    assert torch.equal(
        layer.weight[~mask], torch.zeros(int((~mask).sum()))
    )  # 0 stays 0
    layer(torch.randn(2, 6)).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    assert torch.equal(
        grad[~mask], torch.zeros(int((~mask).sum()))
    )  # pruned weights stay put
    assert bool((grad[mask] != 0).any())


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12])
@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("symmetric", [True, False])
def test_a_packed_weight_unpacks_to_exactly_what_the_layer_computes_with(
    bits, axis, symmetric
):
    if symmetric and bits == 1:
        return  # no signed symmetric 1-bit grid
    quantizer = FakeQuantWeight(bits=bits, symmetric=symmetric, axis=axis)
    weight = torch.randn(5, 3, 2)
    packed = quantizer.pack(weight)
    assert packed["codes"].dtype == torch.uint8 and len(packed["codes"]) == math.ceil(
        30 * bits / 8
    )
    assert torch.equal(FakeQuantWeight.unpack(packed), quantizer(weight))
    one_number = axis is None or symmetric  # symmetric zero points are all 0
    assert isinstance(packed["zero_point"], int) == one_number


def test_activation_quantizer_observes_then_fake_quantizes_with_frozen_qparams():
    act = ActQuant(MinMaxObserver(bits=8), name="relu")
    x = torch.randn(4, 3)
    assert act(x) is x  # observing only
    scale, zero_point = act.calculate_qparams()
    act.freeze(scale, zero_point)
    assert act.observer is None and "quantizing" in repr(act)
    y = 3 * torch.randn(4, 3)  # new data does not move the range
    expected = torch.fake_quantize_per_tensor_affine(
        y, float(scale), int(zero_point), 0, 255
    )
    torch.testing.assert_close(act(y), expected, rtol=0, atol=0)


def test_per_channel_activation_qparams_survive_a_state_dict_round_trip():
    act = ActQuant(MinMaxObserver(axis=1, symmetric=True, signed=True))
    act(torch.randn(4, 3, 2))
    act.freeze(*act.calculate_qparams())
    fresh = ActQuant(MinMaxObserver(axis=1, symmetric=True, signed=True))
    fresh.load_state_dict(
        act.state_dict(), strict=False
    )  # the frozen one has no observer
    fresh.freeze(fresh.scale, fresh.zero_point)
    x = torch.randn(4, 3, 2)
    assert fresh.scale.shape == (3,) and torch.equal(fresh(x), act(x))


def test_activation_errors_name_the_activation():
    act = ActQuant(MinMaxObserver(), name="layer1.relu")
    with pytest.raises(
        ValueError,
        match="activation 'layer1.relu': MinMaxObserver has observed no data",
    ):
        act.calculate_qparams()
    with pytest.raises(
        ValueError, match="activation 'layer1.relu': the observed tensor holds 1 NaN"
    ):
        act(torch.tensor([1.0, math.nan]))
    with pytest.raises(TypeError, match="observer must be an Observer"):
        ActQuant(nn.Identity())


def test_dynamic_quantizer_uses_each_batchs_own_range():
    quantizer = DynamicActQuant(bits=8)
    for scale_up in (1.0, 10.0):
        x = scale_up * torch.randn(16)
        observer = tq.MinMaxObserver(dtype=torch.quint8)
        observer(x)
        scale, zero_point = observer.calculate_qparams()
        expected = torch.fake_quantize_per_tensor_affine(
            x, float(scale), int(zero_point), 0, 255
        )
        torch.testing.assert_close(quantizer(x), expected, rtol=0, atol=0)


def test_weight_quantizer_settings_are_checked():
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        FakeQuantWeight(bits=0)
    with pytest.raises(ValueError, match="axis must be an int >= 0"):
        FakeQuantWeight(axis=-1)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 20"):
        DynamicActQuant(bits=20)
