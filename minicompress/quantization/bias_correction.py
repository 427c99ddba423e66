"""Bias correction: remove the mean shift that weight quantization adds to each layer's output.

Nagel, van Baalen, Blankevoort, Welling, "Data-Free Quantization Through Weight Equalization
and Bias Correction", ICCV 2019, arXiv:1906.04721, §4.2. With W̃ = W + ε the quantized weight,

    E[W̃x] − E[Wx] = E[εx]            the error is biased: ε is fixed, E[x] is not 0 after a ReLU
    b̃ = b − E[εx]                     so that E[W̃x + b̃] = E[Wx + b]

Rounding errors need not average out within an output channel (a channel whose weights mostly
round up shifts up), and a shifted mean passes on to every later layer. This is the paper's
empirical variant: E[εx] measured on calibration data, per output channel, over the batch and
every position (zero padding included, so the correction is exact for the convolution as it
runs). Layers are corrected in the order the model calls them, each on the inputs it receives
once the layers before it are corrected, so every corrected layer ends with zero mean output
error on the calibration data. The paper's analytic variant, E[x] from the previous layer's
BatchNorm statistics without data, is not implemented.

Entry point: bias_correction(model, loader). Core: bias_shift. Helpers shared with `adaround`:
quantized_layers, weight_pair, layer_inputs, call_order.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from .calibration import calibrate, check_loader
from .ptq import QUANTIZED_TYPES

__all__ = [
    "bias_correction",
    "bias_shift",
    "quantized_layers",
    "weight_pair",
    "layer_inputs",
    "call_order",
]


def bias_shift(layer, inputs, error):
    """Core: E[εx], what the weight error ε = W̃ − W adds to the mean of each output channel
    of `layer` (a Linear or Conv) on the input batches `inputs`; (C_out,) float64.

    For a Linear the mean runs over every row, for a Conv over the batch and all positions.
    """
    total, count = 0.0, 0
    for x in inputs:
        y = _apply(layer, x, error.to(x.dtype))  # (..., C_out) or (N, C_out, *positions)
        channels = y.movedim(-1 if isinstance(layer, nn.Linear) else 1, 0)
        total = total + channels.reshape(channels.shape[0], -1).double().sum(1)
        count += channels[0].numel()
    return total / count


def bias_correction(model, loader, batches=None):
    """A copy of a quantized `model` whose layers' biases absorb the mean error of their
    quantized weights (Nagel et al. 2019, §4.2, empirical): b̃ = b − E[(W̃ − W) x].

    Every Linear/Conv whose weight is stored quantized (its last parametrization packs itself:
    `FakeQuantWeight`, `AdaRoundWeight`, ...) is corrected; W is the weight that last
    parametrization receives (after a pruning mask, say), W̃ what it returns. A layer without
    a bias gets one.

    Args:
        model: a quantized model (from `quantize_weights`, `quantize_ptq`, `adaround`...).
        loader: calibration data, a re-iterable of batches (input, or (input, target)).
        batches: use the first `batches` batches (an int >= 1), or all (None).

    Returns:
        The corrected copy, in the mode `model` was in; `model` is unchanged.

    Raises:
        TypeError / ValueError: a bad argument, an empty or one-shot loader, no layer with a
            quantized weight, or a NaN/inf in a layer's input on the calibration data.

    Example:
        >>> from minicompress.quantization import quantize_weights
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 1))
        >>> with torch.no_grad(): _ = net[0].weight.copy_(torch.tensor([[0.9, -0.2, 0.4]]))
        >>> q = quantize_weights(net, bits=2)   # W̃ = [0.6, 0, 0.6]: ε = [-0.3, 0.2, 0.2]
        >>> x = torch.tensor([[1.0, 0, 1], [3, 2, 1]])   # E[x] = [2, 1, 1]: E[εx] = -0.2
        >>> round(float(bias_correction(q, [x])[0].bias.detach() - net[0].bias.detach()), 6)
        0.2
    """
    _checks.check_module(model)
    batches = None if batches is None else _checks.check_int(batches, "batches", low=1)
    check_loader(loader)
    corrected = copy.deepcopy(model)
    layers = quantized_layers(corrected)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Linear/Conv layer with a quantized weight: "
            "nothing to correct (quantize it first, e.g. with quantize_weights or quantize_ptq)"
        )
    for name in call_order(corrected, layers, loader):
        layer = layers[name]
        inputs = layer_inputs(corrected, layer, loader, batches, name)
        with torch.no_grad():
            weight, quantized = weight_pair(layer)
            shift = bias_shift(layer, inputs, quantized - weight)
            if layer.bias is None:
                layer.bias = nn.Parameter(quantized.new_zeros(quantized.shape[0]))
            layer.bias -= shift.to(layer.bias.dtype)
    return corrected


def quantized_layers(model):
    """{name: layer} of the Linear/Conv layers whose weight's last parametrization packs
    itself (is stored quantized), in model order."""
    return {
        name: layer
        for name, layer in model.named_modules()
        if isinstance(layer, QUANTIZED_TYPES)
        and parametrize.is_parametrized(layer, "weight")
        and callable(getattr(layer.parametrizations.weight[-1], "pack", None))
    }


def weight_pair(layer):
    """(W, W̃): what the weight's last parametrization receives and what it returns."""
    chain = layer.parametrizations.weight
    weight = chain.original
    for parametrization in list(chain)[:-1]:  # e.g. a pruning mask before the quantizer
        weight = parametrization(weight)
    return weight, chain[-1](weight)


def layer_inputs(model, layer, loader, batches=None, name="layer"):
    """The tensors `layer` receives as input while `model` runs the calibration batches (eval
    mode, no gradients), as a list of detached copies; NaN or inf is an error naming `name`."""
    inputs = []
    handle = layer.register_forward_pre_hook(
        lambda module, args: inputs.append(args[0].detach().clone())
    )
    try:
        calibrate(model, loader, batches)
    finally:
        handle.remove()
    for x in inputs:
        _checks.check_tensor(x, f"input of layer {name!r} on the calibration data", finite=True)
    return inputs


def call_order(model, layers, loader):
    """The names in `layers` ({name: module}) in the order `model` first calls them on the
    first calibration batch; a layer never called is left out."""
    order, handles = [], []
    for name, layer in layers.items():
        hook = lambda module, args, name=name: order.append(name) if name not in order else None
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        calibrate(model, loader, batches=1)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _apply(layer, x, weight):
    """The layer's linear map with `weight` and no bias (its stride, padding, groups...)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return layer._conv_forward(x, weight, None)
