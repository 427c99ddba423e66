"""Post-training quantization of a whole model: weights, then activations, without training.

Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv:1806.08342, 2018, §3.1; Nagel et al., "A White Paper on Neural Network
Quantization", arXiv:2106.08295, 2021, §3. Every function returns a fake-quantized COPY:

    quantize_weights(model, bits)             weight-only: Ŵ on every Conv/Linear, float activations
    quantize_dynamic(model, ...)              + each layer's input quantized with the current
                                              batch's range (no calibration)
    quantize_ptq(model, loader, ...)          static: BatchNorm folded, then observers calibrated
                                              on the loader give every activation a fixed range

What is quantized: the weight of every Linear and Conv1d/2d/3d (a `FakeQuantWeight`
parametrization, so pruning masks and `state_dict` keep working), and for the dynamic and
static variants the tensor each of those layers reads (an `ActQuant` / `DynamicActQuant`
module inserted with torch.fx after the node that produces it, shared by the layers reading
the same tensor): what an integer kernel takes as input. Residual adds, pooling and the
output logits stay in float. Weights default to signed symmetric per-channel (torch.ao's
default), activations to unsigned affine per-tensor (quint8).
"""

import copy

from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from .calibration import calibrate, check_loader, insert_before_layers
from .fake_quant import ActQuant, DynamicActQuant, FakeQuantWeight
from .folding import fold_batchnorm
from .observers import OBSERVERS, Observer

__all__ = [
    "QUANTIZED_TYPES",
    "quantizable_layers",
    "quantize_weights",
    "quantize_dynamic",
    "quantize_ptq",
]

# Layers whose weight is quantized and whose input counts as an activation to quantize.
QUANTIZED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantizable_layers(model, exclude=()):
    """{name: layer} of the Linear and Conv1d/2d/3d layers to quantize, in model order.

    Raises:
        ValueError: no such layer (nothing to quantize), an excluded name that is not one of
            them, everything excluded, a weight already fake-quantized, or a weight holding
            NaN or inf.
    """
    _checks.check_module(model)
    layers = {
        n: m for n, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES) and n
    }
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has nothing to quantize: no Linear or Conv1d/2d/3d "
            "submodule (wrap a single layer in nn.Sequential)"
        )
    excluded = _checks.check_names(exclude, "exclude")
    unknown = [name for name in excluded if name not in layers]
    if unknown:
        raise ValueError(
            f"exclude names {unknown}, not quantizable layers; allowed: {', '.join(layers)}"
        )
    kept = {name: layer for name, layer in layers.items() if name not in excluded}
    if not kept:
        raise ValueError(f"exclude={list(excluded)} leaves nothing to quantize")
    for name, layer in kept.items():
        if parametrize.is_parametrized(layer, "weight") and any(
            isinstance(p, FakeQuantWeight) for p in layer.parametrizations.weight
        ):
            raise ValueError(f"layer {name!r} is already fake-quantized")
        _checks.check_tensor(layer.weight, f"weight of layer {name!r}", finite=True)
    return kept


def quantize_weights(model, bits=8, per_channel=True, symmetric=True, exclude=()):
    """A copy of `model` with every Conv/Linear weight fake-quantized (weight-only PTQ).

    Args:
        model: any nn.Module (no tracing needed).
        bits: weight bits, an int in [2, 16] (signed grid).
        per_channel: one scale per output channel (True) or per tensor.
        symmetric: z = 0 (True) or affine.
        exclude: names of layers to leave in float.

    Returns:
        The quantized copy, in the mode `model` was in; `model` is unchanged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[0.1, -0.9, 0.5, 1.2]]))
        >>> quantize_weights(net, bits=4)[0].weight.detach()   # s = 1.2 / 7.5; 7.5 clips to 7
        tensor([[ 0.1600, -0.9600,  0.4800,  1.1200]])
    """
    weight_quant = FakeQuantWeight(
        bits, symmetric, True, axis=0 if _per_channel(per_channel) else None
    )
    layers = quantizable_layers(model, exclude)
    quantized = copy.deepcopy(model)
    _install_weights(quantized, layers, weight_quant)
    return quantized


def quantize_dynamic(model, weight_bits=8, act_bits=8, per_channel=True, exclude=()):
    """A copy with quantized weights and each quantized layer's input quantized on the fly,
    from the min and max of the current batch (affine, per tensor).

    Returns a `torch.fx.GraphModule` in eval mode; `model` is unchanged. Raises as
    `quantize_weights`, and ValueError when the model cannot be traced.
    """
    weight_quant = FakeQuantWeight(
        weight_bits, True, True, axis=0 if _per_channel(per_channel) else None
    )
    DynamicActQuant(act_bits)  # checks act_bits
    layers = quantizable_layers(model, exclude)
    quantized = _checks.trace(copy.deepcopy(model), "quantize_dynamic")
    insert_before_layers(
        quantized, layers, lambda name: DynamicActQuant(act_bits, name=name)
    )
    _install_weights(quantized, layers, weight_quant)
    return quantized.eval()


def quantize_ptq(
    model,
    calibration_loader,
    weight_bits=8,
    act_bits=8,
    per_channel=True,
    observer="minmax",
    act_symmetric=False,
    fold_bn=True,
    batches=None,
    exclude=(),
    keep_observers=False,
):
    """Static post-training quantization: a fake-quantized copy of `model` with calibrated
    activation ranges.

    Steps, on a copy: fold BatchNorm (`fold_batchnorm`), trace, put an observer on the input
    of every Conv/Linear, run the calibration batches (eval mode, no gradients), compute every
    observer's qparams, and only then install the weight quantizers and freeze the activation
    quantizers. A failure at any step leaves nothing half-done, and `model` is never changed.

    Args:
        model: an nn.Module torch.fx can trace (torchvision ResNets and MobileNets do).
        calibration_loader: a re-iterable of batches (a DataLoader, a list); a batch is an
            input tensor or a tuple/list whose first item is the input.
        weight_bits: an int in [2, 16]; signed symmetric weights.
        act_bits: an int in [1, 16] (affine) or [2, 16] (act_symmetric).
        per_channel: weights per output channel (True) or per tensor.
        observer: a name in `OBSERVERS` ("minmax", "moving_average", "percentile", "mse",
            "entropy"), or a callable taking (bits=, symmetric=, signed=) and returning an
            Observer, e.g. functools.partial(PercentileObserver, percentile=99.9).
        act_symmetric: signed symmetric activations (True) or unsigned affine (False).
        fold_bn: fold BatchNorm into the preceding convolutions first.
        batches: calibrate on the first `batches` batches (an int >= 1), or all (None).
        exclude: names of layers left in float (weight and input).
        keep_observers: keep each ActQuant's observer (to inspect its statistics) after
            calibration; by default they are dropped, so the model stores only its qparams.

    Returns:
        A `torch.fx.GraphModule` in eval mode.

    Raises:
        TypeError / ValueError: a bad argument, nothing to quantize, an empty or one-shot
            loader, an untraceable model, a NaN/inf weight or activation, an activation no
            calibration batch reached.
    """
    weight_quant = FakeQuantWeight(
        weight_bits, True, True, axis=0 if _per_channel(per_channel) else None
    )
    make_observer = _observer_factory(observer, act_bits, act_symmetric)
    fold_bn = _checks.check_bool(fold_bn, "fold_bn")
    keep_observers = _checks.check_bool(keep_observers, "keep_observers")
    batches = None if batches is None else _checks.check_int(batches, "batches", low=1)
    check_loader(calibration_loader)
    layers = quantizable_layers(model, exclude)
    quantized = (
        fold_batchnorm(model)
        if fold_bn
        else _checks.trace(copy.deepcopy(model), "quantize_ptq")
    )
    acts = insert_before_layers(
        quantized, layers, lambda name: ActQuant(make_observer(), name)
    )
    calibrate(quantized, calibration_loader, batches)
    ranges = {name: act.calculate_qparams() for name, act in acts.items()}  # may raise
    _install_weights(quantized, layers, weight_quant)
    for name, act in acts.items():
        act.freeze(*ranges[name], keep_observer=keep_observers)
    return quantized.eval()


# ---------------------------------------------------------------------------------------------


def _per_channel(per_channel):
    return _checks.check_bool(per_channel, "per_channel")


def _observer_factory(observer, bits, symmetric):
    """A zero-argument maker of the activation observer; builds one now to check the settings."""
    symmetric = _checks.check_bool(symmetric, "act_symmetric")
    if isinstance(observer, str):
        make = OBSERVERS[_checks.check_choice(observer, "observer", OBSERVERS)]
    else:
        make = _checks.check_callable(observer, "observer")

    def factory():
        return make(bits=bits, symmetric=symmetric, signed=symmetric)

    try:
        sample = factory()
    except TypeError as error:
        raise TypeError(
            "observer must be a name in OBSERVERS or a callable taking bits=, symmetric=, "
            f"signed= and returning an Observer; calling it failed: {error}"
        ) from None
    if not isinstance(sample, Observer):
        raise TypeError(f"observer must make an Observer, got {type(sample).__name__}")
    return factory


def _install_weights(model, layers, template):
    """A copy of `template` (a FakeQuantWeight) on the weight of each named layer of `model`."""
    for name in layers:
        layer = model.get_submodule(name)
        parametrize.register_parametrization(layer, "weight", copy.deepcopy(template))
