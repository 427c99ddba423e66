"""Tests of minicompress.quantization.binary: BinaryConnect, XNOR-Net weights, binary inputs."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import measure
from minicompress.quantization import (
    BinaryActivation,
    BinaryConnectWeight,
    ClipLatentWeights,
    XnorWeight,
    binarize,
    binary_activation,
    glorot_scale,
    sign_ste,
)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, type(model)


def unchanged(model, before):
    state, kind = before
    return (
        type(model) is kind
        and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        and set(state) == set(model.state_dict())
    )


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )


def test_sign_ste_is_plus_or_minus_one_with_the_clipped_gradient():
    x = torch.tensor(
        [-2.0, -0.5, 0.0, 0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True
    )
    y = sign_ste(x)
    y.backward(torch.ones_like(x))
    # Hand-worked: sign(0) = +1; the gradient is 1 inside [-1, 1] (hardtanh's derivative).
    torch.testing.assert_close(
        y.detach(), torch.tensor([-1.0, -1, 1, 1, 1, 1], dtype=torch.float64)
    )
    torch.testing.assert_close(
        x.grad, torch.tensor([0.0, 1, 1, 1, 1, 0], dtype=torch.float64)
    )


def test_binaryconnect_is_plus_minus_h_and_cancels_the_gradient_beyond_h():
    w = torch.tensor(
        [[0.3, -0.1, 0.0, -2.0, 0.6]], dtype=torch.float64, requires_grad=True
    )
    out = BinaryConnectWeight(scale=0.5)(w)
    out.backward(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64))
    torch.testing.assert_close(
        out.detach(), torch.tensor([[0.5, -0.5, 0.5, -0.5, 0.5]], dtype=torch.float64)
    )
    # ∂L/∂W = ∂L/∂Ŵ where |W| <= H = 0.5 (BinaryConnect's straight-through estimator).
    torch.testing.assert_close(
        w.grad, torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0]], dtype=torch.float64)
    )


def test_glorot_scale_is_the_binaryconnect_codes_h():
    # H = sqrt(1.5 / (fan_in + fan_out)); conv (6, 1, 5, 5): fan_in 25, fan_out 150.
    assert glorot_scale(torch.empty(6, 1, 5, 5)) == pytest.approx(math.sqrt(1.5 / 175))
    assert glorot_scale(torch.empty(120, 400)) == pytest.approx(math.sqrt(1.5 / 520))


def test_xnor_alpha_is_the_mean_absolute_weight_of_each_filter():
    # Two 1x2x2 filters written out: α_0 = (1 + 2 + 3 + 2) / 4 = 2, α_1 = (0.1 + 0.3 + 0.1 + 0.3) / 4 = 0.2.
    w = torch.tensor(
        [[[[1.0, -2.0], [3.0, -2.0]]], [[[0.1, 0.3], [-0.1, -0.3]]]],
        dtype=torch.float64,
    )
    expected = torch.tensor(
        [[[[2.0, -2.0], [2.0, -2.0]]], [[[0.2, 0.2], [-0.2, -0.2]]]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(XnorWeight()(w), expected)


def test_xnor_gradient_is_the_papers_formula():
    w = torch.tensor([[0.5, -1.5, 0.25, 0.75]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
    XnorWeight()(w).backward(g)
    # Rastegari et al. §3.1: ∂C/∂W_i = ∂C/∂Ŵ_i (1/n + α·1[|W_i| <= 1]); n = 4, α = 0.75.
    slope = torch.tensor(
        [[0.25 + 0.75, 0.25, 0.25 + 0.75, 0.25 + 0.75]], dtype=torch.float64
    )
    torch.testing.assert_close(w.grad, g * slope)


def test_binary_activation_keeps_relu_zeros_and_clips_its_gradient():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 4.0], requires_grad=True)
    y = binary_activation(x)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    assert "name='fc1'" in repr(BinaryActivation("fc1"))


@pytest.mark.parametrize("method", ["binaryconnect", "xnor"])
def test_binarized_weights_take_two_values_per_filter_and_pack_to_one_bit(method):
    net = small_net()
    before = snapshot(net)
    binary = binarize(net, method)
    assert unchanged(net, before)
    for layer in (binary[0], binary[3]):
        w = layer.weight.detach()
        assert all(len(row.abs().unique()) == 1 for row in w.reshape(len(w), -1))
        part = layer.parametrizations.weight[-1]
        packed = part.pack(layer.parametrizations.weight.original)
        assert torch.equal(part.unpack(packed), w)
        assert len(packed["signs"]) == math.ceil(w.numel() / 8)


def test_binaryconnect_clips_the_latent_weight_on_install_and_after_each_step():
    net = small_net()
    with torch.no_grad():
        net[3].weight[0, 0] = 5.0
    binary = binarize(net, "binaryconnect")
    original = binary[3].parametrizations.weight.original
    h = binary[3].parametrizations.weight[0].scale
    assert float(original.detach().abs().max()) <= h
    with torch.no_grad():
        original[0, 0] = 3 * h
    ClipLatentWeights().after_step(binary, 0)
    assert float(original[0, 0].detach()) == pytest.approx(h)


def test_binary_model_trains_its_latent_weights():
    net = binarize(small_net(), "xnor")
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(net(x), y).backward()
    assert net[0].parametrizations.weight.original.grad.abs().sum() > 0


def test_binary_activations_are_inserted_before_every_binarized_layer():
    net = small_net()
    before = snapshot(net)
    binary = binarize(net, "xnor", binary_activations=True, exclude=("0",))
    assert unchanged(net, before)
    acts = [m for m in binary.modules() if isinstance(m, BinaryActivation)]
    assert len(acts) == 1  # only layer "3" is binarized: its flattened input
    assert not parametrize.is_parametrized(binary.get_submodule("0"))
    assert binary(torch.randn(2, 1, 6, 6)).shape == (2, 3)


def test_packed_file_of_a_binary_linear_layer_is_about_one_bit_per_weight():
    net = nn.Sequential(nn.Linear(512, 512, bias=False))
    size = measure.size_bytes(binarize(net, "xnor"), "packed")
    payload = 512 * 512 // 8 + 4 * 512  # signs + one float32 α per filter
    assert payload <= size < 1.06 * payload  # the rest is torch.save's framing


def test_unknown_method_is_a_clear_error_and_the_model_is_unchanged():
    net = small_net()
    before = snapshot(net)
    with pytest.raises(
        ValueError, match="method must be one of 'binaryconnect', 'xnor'"
    ):
        binarize(net, "bnn")
    with pytest.raises(TypeError, match="binary_activations must be True or False"):
        binarize(net, "xnor", binary_activations=1)
    assert unchanged(net, before)


def test_a_model_with_nothing_to_quantize_is_refused():
    net = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="nothing to quantize"):
        binarize(net)


def test_binarizing_twice_is_refused():
    twice = binarize(small_net())
    before = snapshot(twice)
    with pytest.raises(ValueError, match="already quantized"):
        binarize(twice)
    assert unchanged(twice, before)


def test_scale_must_be_positive():
    with pytest.raises(ValueError, match=r"scale must be a finite number > 0, got 0"):
        BinaryConnectWeight(0)
