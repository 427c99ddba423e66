"""Mixed precision: a bit width per layer, chosen by sensitivity under a size budget.

Wang, Liu, Lin, Lin, Han, "HAQ: Hardware-Aware Automated Quantization with Mixed Precision",
CVPR 2019, arXiv:1811.08886; Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks
with Mixed-Precision", ICCV 2019, arXiv:1905.03696. Both search per-layer bit widths; we use
the simplest rule that shows the effect, a greedy descent on measured sensitivity (the idea of
AIMET's automatic mixed precision):

    sensitivity   s_l(b) = score(float model) − score(model with only layer l at b bits)
                  (accuracy drop), or the data-free ‖Ŵ_l − W_l‖² / ‖W_l‖² at b bits
    greedy        start every layer at its largest width; while Σ_l ceil(n_l·b_l / 8) > budget,
                  lower the one layer whose next width costs the least sensitivity per byte
                  saved, Δs_l / Δbytes_l; then spend what is left of the budget raising layers
                  (the best Δs_l / Δbytes_l first) while they fit

Layers are quantized by a weight scheme chosen by name (WEIGHT_SCHEMES: "uniform" per-channel
symmetric, "power_of_two", "kmeans", "binaryconnect", "xnor", "twn", "ttq"), each with the bit
widths it supports.

Entry points: quantize_mixed(model, bits, scheme="uniform", exclude=()), layer_sensitivity,
quantization_error, allocate_bits, weight_bytes; WEIGHT_SCHEMES, Scheme.
"""

from collections.abc import Callable
from typing import NamedTuple

from .. import _checks
from ._install import quantize_layers
from .binary import BINARY_METHODS
from .fake_quant import FakeQuantWeight
from .kmeans import KMeansWeight
from .packing import packed_nbytes
from .power_of_two import PowerOfTwoWeight
from .ptq import quantizable_layers
from .ternary import TERNARY_METHODS

__all__ = [
    "Scheme",
    "WEIGHT_SCHEMES",
    "quantize_mixed",
    "layer_sensitivity",
    "quantization_error",
    "allocate_bits",
    "weight_bytes",
]


class Scheme(NamedTuple):
    """A weight quantization scheme: make(weight, bits) -> parametrization, its bit range, and
    table_bytes(weight, bits), the float32 bytes it stores beside the codes (scales, codebook)."""

    make: Callable
    min_bits: int
    max_bits: int
    table_bytes: Callable


WEIGHT_SCHEMES = {
    # one float32 scale per output channel (the zero point of a symmetric grid is one int)
    "uniform": Scheme(
        lambda weight, bits: FakeQuantWeight(bits, axis=0), 2, 16, lambda w, b: 4 * len(w)
    ),
    # one int, k_min
    "power_of_two": Scheme(
        lambda weight, bits: PowerOfTwoWeight(bits), 2, 8, lambda w, b: 4
    ),
    # a codebook of 2^b float32 values
    "kmeans": Scheme(
        lambda weight, bits: KMeansWeight.from_weight(weight, bits),
        1,
        8,
        lambda w, b: 4 * 2**b,
    ),
    "binaryconnect": Scheme(
        lambda weight, bits: BINARY_METHODS["binaryconnect"](weight), 1, 1, lambda w, b: 4
    ),
    "xnor": Scheme(
        lambda weight, bits: BINARY_METHODS["xnor"](weight), 1, 1, lambda w, b: 4 * len(w)
    ),
    "twn": Scheme(lambda weight, bits: TERNARY_METHODS["twn"](weight), 2, 2, lambda w, b: 8),
    "ttq": Scheme(lambda weight, bits: TERNARY_METHODS["ttq"](weight), 2, 2, lambda w, b: 8),
}


def quantize_mixed(model, bits, scheme="uniform", exclude=()):
    """A copy of `model` with each layer's weight quantized at its own bit width.

    Args:
        model: any nn.Module.
        bits: an int (every Conv/Linear layer at that width) or a dict {layer name: int}
            (only those layers; the others stay float).
        scheme: a name in WEIGHT_SCHEMES; every width must be within its range (binary
            schemes take 1 bit, ternary 2).
        exclude: names of layers left in float (with an int `bits`).

    Returns:
        The copy, in `model`'s mode; `model` is unchanged.

    Raises:
        ValueError: an unknown scheme, a width the scheme does not support, a layer name that
            is not a quantizable layer, an empty dict (nothing to quantize), a codebook larger
            than a layer.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
        >>> q = quantize_mixed(net, {"0": 8, "1": 2}, scheme="kmeans")
        >>> len(q[0].weight.unique()) > 4, len(q[1].weight.unique()) <= 4   # 2^8 vs 2^2 values
        (True, True)
    """
    spec = WEIGHT_SCHEMES[_checks.check_choice(scheme, "scheme", WEIGHT_SCHEMES)]
    widths = _bits_per_layer(model, bits, exclude, scheme, spec)
    return quantize_layers(
        model,
        lambda name, weight: _make(spec, name, weight, widths[name]),
        layers=tuple(widths),
    )


def layer_sensitivity(model, evaluate, bits=(2, 3, 4, 8), scheme="uniform", exclude=()):
    """How much the score drops when one layer alone is quantized, for each layer and width.

    Args:
        model: the float model (not changed).
        evaluate: callable(model) -> float, higher is better (accuracy on held-out data, say;
            not the test set you report).
        bits: the widths to try, ints the scheme supports.
        scheme: a name in WEIGHT_SCHEMES.
        exclude: layers not scanned (they stay float).

    Returns:
        {layer name: {bits: evaluate(model) − evaluate(model with that layer at bits)}}.

    Example:
        >>> import torch
        >>> net, x = torch.nn.Sequential(torch.nn.Linear(8, 8)), torch.randn(32, 8)
        >>> score = lambda m: -float((m(x) - net(x)).pow(2).mean().detach())   # closeness to float
        >>> drop = layer_sensitivity(net, score, bits=(2, 8))
        >>> drop["0"][2] > drop["0"][8] >= 0
        True
    """
    _checks.check_callable(evaluate, "evaluate")
    widths = _check_widths(bits, scheme)
    layers = quantizable_layers(model, exclude)
    base = float(evaluate(model))
    return {
        name: {
            b: base - float(evaluate(quantize_mixed(model, {name: b}, scheme)))
            for b in widths
        }
        for name in layers
    }


def quantization_error(model, bits=(2, 3, 4, 8), scheme="uniform", exclude=()):
    """Data-free sensitivity: ‖Ŵ − W‖² / ‖W‖² of each layer at each width.

    Returns:
        {layer name: {bits: relative squared error}}.

    Example:
        >>> import torch
        >>> err = quantization_error(torch.nn.Sequential(torch.nn.Linear(16, 8)), bits=(2, 8))
        >>> err["0"][8] < err["0"][2]
        True
    """
    widths = _check_widths(bits, scheme)
    layers = quantizable_layers(model, exclude)
    errors = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        norm = float((w**2).sum()) or 1.0
        errors[name] = {
            b: float(
                ((_make(WEIGHT_SCHEMES[scheme], name, w, b)(w).detach() - w) ** 2).sum()
            )
            / norm
            for b in widths
        }
    return errors


def weight_bytes(model, bits, scheme="uniform"):
    """Σ_l ceil(n_l·b_l / 8) + the scheme's scales or codebook: the bytes of the quantized
    weights of `bits` {layer: width} (biases and torch.save's framing not included).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(16, 4))
        >>> weight_bytes(net, {"0": 2}, "kmeans")   # 64·2/8 codes + 4 centroids·4 bytes
        32
    """
    spec = WEIGHT_SCHEMES[_checks.check_choice(scheme, "scheme", WEIGHT_SCHEMES)]
    layers = quantizable_layers(model)
    return sum(
        packed_nbytes(layers[name].weight.numel(), b) + spec.table_bytes(layers[name].weight, b)
        for name, b in bits.items()
    )


def allocate_bits(model, sensitivity, budget_bytes, scheme="uniform"):
    """Greedy bit allocation: the widths of `sensitivity` whose weights fit in `budget_bytes`.

    Every layer starts at its largest width in `sensitivity`; while `weight_bytes` exceeds the
    budget, the layer whose next smaller width adds the least sensitivity per byte saved is
    lowered (ties: the larger saving, then model order). Then, while the budget has room, the
    layer whose next larger width removes the most sensitivity per byte is raised again.

    Args:
        model: the model `sensitivity` was measured on (for the weight counts).
        sensitivity: {layer: {bits: cost}} from `layer_sensitivity` or `quantization_error`.
        budget_bytes: an int >= 1, the most bytes the quantized weights may take
            (`weight_bytes`: codes plus the scheme's scales or codebooks).
        scheme: the name in WEIGHT_SCHEMES the widths are for (it prices the codebooks).

    Returns:
        {layer: bits}.

    Raises:
        ValueError: the budget is below what the smallest widths need.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        >>> cost = {"0": {2: 0.5, 8: 0.0}, "1": {2: 0.1, 8: 0.0}}
        >>> budget = 64 + 16 + 2 * 32   # codes at 8 and 2 bits + a float32 scale per output
        >>> allocate_bits(net, cost, budget)   # one layer to 2 bits: the one that costs less
        {'0': 8, '1': 2}
    """
    budget = _checks.check_int(budget_bytes, "budget_bytes", low=1)
    _checks.check_choice(scheme, "scheme", WEIGHT_SCHEMES)
    if not isinstance(sensitivity, dict) or not sensitivity:
        raise TypeError("sensitivity must be a non-empty dict {layer: {bits: cost}}")
    layers = quantizable_layers(model)
    for name, costs in sensitivity.items():
        if name not in layers:
            raise ValueError(
                f"sensitivity names {name!r}, not a quantizable layer of the model"
            )
        if not isinstance(costs, dict) or not costs:
            raise TypeError(
                f"sensitivity[{name!r}] must be a non-empty dict {{bits: cost}}"
            )
    options = {name: sorted(costs, reverse=True) for name, costs in sensitivity.items()}
    chosen = {name: widths[0] for name, widths in options.items()}
    smallest = weight_bytes(
        model, {name: widths[-1] for name, widths in options.items()}, scheme
    )
    if smallest > budget:
        raise ValueError(
            f"budget_bytes={budget} is below the {smallest} bytes the smallest widths need"
        )
    order = list(options)

    def size(name, b):  # the bytes of one layer at b bits
        return weight_bytes(model, {name: b}, scheme)

    # 1. Descend: lower the layer whose next smaller width costs least per byte saved.
    while weight_bytes(model, chosen, scheme) > budget:
        moves = []
        for name in order:
            widths, b = options[name], chosen[name]
            if b == widths[-1]:
                continue
            lower = widths[widths.index(b) + 1]
            saved = size(name, b) - size(name, lower)
            extra = sensitivity[name][lower] - sensitivity[name][b]
            moves.append(
                (extra / max(saved, 1), -saved, order.index(name), name, lower)
            )
        _, _, _, name, lower = min(moves)
        chosen[name] = lower
    # 2. Refill: one large step (a big layer dropping a bit) can undershoot the budget by
    # kilobytes; raise the layers whose next larger width buys the most per byte, while it fits.
    while True:
        room = budget - weight_bytes(model, chosen, scheme)
        moves = []
        for name in order:
            widths, b = options[name], chosen[name]
            if b == widths[0]:
                continue
            higher = widths[widths.index(b) - 1]
            spent = size(name, higher) - size(name, b)
            gain = sensitivity[name][b] - sensitivity[name][higher]
            if spent <= room and gain > 0:
                moves.append(
                    (-gain / max(spent, 1), spent, order.index(name), name, higher)
                )
        if not moves:
            break
        _, _, _, name, higher = min(moves)
        chosen[name] = higher
    return chosen


# ---------------------------------------------------------------------------------------------


def _check_widths(bits, scheme):
    spec = WEIGHT_SCHEMES[_checks.check_choice(scheme, "scheme", WEIGHT_SCHEMES)]
    widths = (
        (bits,) if isinstance(bits, int) and not isinstance(bits, bool) else tuple(bits)
    )
    if not widths:
        raise ValueError("bits must name at least one width")
    return tuple(_check_width(b, "bits", scheme, spec) for b in widths)


def _check_width(b, what, scheme, spec):
    if isinstance(b, bool) or not isinstance(b, int):
        raise TypeError(f"{what} must be an int, got {b!r}")
    if not spec.min_bits <= b <= spec.max_bits:
        low, high = spec.min_bits, spec.max_bits
        if low == high:
            stores, allowed = f"exactly {low} bit{'s' if low > 1 else ''}", f"{low}"
        else:
            stores, allowed = f"{low} to {high} bits", f"an int in [{low}, {high}]"
        raise ValueError(
            f"scheme {scheme!r} stores {stores} per weight: {what} must be {allowed}, got {b}"
        )
    return b


def _bits_per_layer(model, bits, exclude, scheme, spec):
    layers = quantizable_layers(model, exclude)
    if isinstance(bits, dict):
        if not bits:
            raise ValueError("bits is an empty dict: nothing to quantize")
        unknown = [name for name in bits if name not in layers]
        if unknown:
            raise ValueError(
                f"bits names {unknown}, not quantizable layers; allowed: {', '.join(layers)}"
            )
        return {
            name: _check_width(b, f"bits[{name!r}]", scheme, spec)
            for name, b in bits.items()
        }
    b = _check_width(bits, "bits", scheme, spec)
    return dict.fromkeys(layers, b)


def _make(spec, name, weight, bits):
    try:
        return spec.make(weight, bits)
    except ValueError as error:
        raise ValueError(f"layer {name!r}: {error}") from None
