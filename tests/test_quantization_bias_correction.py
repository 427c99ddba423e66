"""Tests of minicompress.quantization.bias_correction: b̃ = b − E[(W̃ − W) x] (Nagel et al. 2019)."""

import pytest
import torch
from torch import nn

from minicompress.pruning import apply_mask
from minicompress.quantization import (
    bias_correction,
    bias_shift,
    layer_inputs,
    quantize_ptq,
    quantize_weights,
    quantized_layers,
    weight_pair,
)

from model_state import snapshot, unchanged


def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, stride=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).double()


def loader(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Positive inputs with a nonzero mean, as after a ReLU: where the bias is largest.
    return [(torch.rand(8, 2, 8, 8, generator=gen, dtype=torch.float64), torch.zeros(8)) for _ in range(n)]


def mean_output_error(corrected, original_biases, data):
    """Per corrected layer: the mean over the calibration data of (W̃x + b̃) − (Wx + b), x the
    layer's input in the corrected model (the defining property: ~0 for every channel)."""
    errors = {}
    for name, layer in quantized_layers(corrected).items():
        inputs = layer_inputs(corrected, layer, data)
        with torch.no_grad():
            weight, quantized = weight_pair(layer)
            shift = bias_shift(layer, inputs, quantized - weight)  # E[W̃x] − E[Wx]
            new, old = layer.bias, original_biases[name]
            errors[name] = shift + (0 if new is None else new) - (0 if old is None else old)
    return errors


def test_a_linear_layer_corrected_by_hand():
    # W = [0.9, -0.2, 0.4], 2-bit symmetric: s = 0.9 / 1.5 = 0.6, W̃ = [0.6, 0, 0.6]
    # ε = [-0.3, 0.2, 0.2]; E[x] = [2, 1, 1]; E[εx] = -0.6 + 0.2 + 0.2 = -0.2; b̃ = 0.1 + 0.2
    net = nn.Sequential(nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.9, -0.2, 0.4]]))
        net[0].bias.fill_(0.1)
    quantized = quantize_weights(net, bits=2)
    torch.testing.assert_close(quantized[0].weight.detach(), torch.tensor([[0.6, 0.0, 0.6]]))
    x = [torch.tensor([[1.0, 0, 1]]), torch.tensor([[3.0, 2, 1]])]  # two batches of one
    corrected = bias_correction(quantized, x)
    torch.testing.assert_close(corrected[0].bias.detach(), torch.tensor([0.3]))
    torch.testing.assert_close(quantized[0].bias.detach(), torch.tensor([0.1]))  # untouched


def test_a_conv_shift_counts_the_zero_padding():
    # One 1x1 input channel of ones, padded by 1: the 3x3 window sees 4, 6 or 9 ones.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    shift = bias_shift(conv, [torch.ones(1, 1, 3, 3)], torch.ones(1, 1, 3, 3))
    # corners 4, edges 6, centre 9: (4·4 + 4·6 + 9) / 9
    torch.testing.assert_close(shift, torch.tensor([49 / 9], dtype=torch.float64))


@pytest.mark.parametrize("bits", [3, 4])
def test_every_corrected_layer_has_zero_mean_output_error(bits):
    model, data = conv_net(), loader()
    quantized = quantize_weights(model, bits=bits, per_channel=False)
    originals = {n: None if m.bias is None else m.bias.detach().clone() for n, m in quantized_layers(quantized).items()}
    before = mean_output_error(quantized, originals, data)
    corrected = bias_correction(quantized, data)
    after = mean_output_error(corrected, originals, data)
    assert set(after) == {"0", "2", "5"}
    assert max(float(e.abs().max()) for e in before.values()) > 1e-3  # there was a bias
    for name, error in after.items():
        torch.testing.assert_close(error, torch.zeros_like(error), rtol=0, atol=1e-10)


def test_static_ptq_model_with_activation_quantizers_is_corrected_layer_by_layer():
    model, data = conv_net(), loader()
    quantized = quantize_ptq(model, data, weight_bits=3)
    originals = {n: None if m.bias is None else m.bias.detach().clone() for n, m in quantized_layers(quantized).items()}
    corrected = bias_correction(quantized, data, batches=2)
    for error in mean_output_error(corrected, originals, data[:2]).values():
        torch.testing.assert_close(error, torch.zeros_like(error), rtol=0, atol=1e-10)
    assert corrected.get_submodule("2").bias is not None  # a layer without bias gets one
    assert quantized.get_submodule("2").bias is None


def test_a_pruning_mask_before_the_quantizer_is_part_of_w():
    model = conv_net()
    apply_mask(model[0], torch.rand(6, 2, 3, 3) > 0.5)
    quantized = quantize_weights(model, bits=3)
    weight, _ = weight_pair(quantized[0])
    assert torch.equal(weight == 0, model[0].weight == 0)  # W is the masked weight
    corrected = bias_correction(quantized, loader())
    originals = {n: None if m.bias is None else m.bias.detach().clone() for n, m in quantized_layers(quantized).items()}
    for error in mean_output_error(corrected, originals, loader()).values():
        assert float(error.abs().max()) < 1e-10


def test_correction_reduces_the_error_of_the_model_output():
    model, data = conv_net(), loader()
    quantized = quantize_weights(model, bits=3, per_channel=False)
    corrected = bias_correction(quantized, data)
    x = torch.cat([b[0] for b in data])
    with torch.no_grad():
        drift = lambda m: float((m(x) - model(x)).mean(0).abs().sum())
        assert drift(corrected) < drift(quantized)


@pytest.mark.parametrize(
    "make_loader,kwargs,error,match",
    [
        (lambda: [], {}, ValueError, "yielded no batches"),
        (lambda: iter(loader()), {}, TypeError, "re-iterable"),
        (lambda: 5, {}, TypeError, "iterable of batches"),
        (loader, {"batches": 0}, ValueError, "batches must be an int >= 1"),
        (loader, {"batches": True}, TypeError, "batches must be an int >= 1"),
        (lambda: [torch.full((2, 2, 8, 8), float("nan"), dtype=torch.float64)], {}, ValueError, "NaN or infinite"),
    ],
)
def test_bad_input_is_refused_and_the_model_is_unchanged(make_loader, kwargs, error, match):
    quantized = quantize_weights(conv_net(), bits=4)
    before = snapshot(quantized)
    with pytest.raises(error, match=match):
        bias_correction(quantized, make_loader(), **kwargs)
    assert unchanged(quantized, before)


def test_a_model_without_quantized_weights_is_refused():
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match="nothing to correct"):
        bias_correction(model, loader())
    assert unchanged(model, before)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        bias_correction("model", loader())
