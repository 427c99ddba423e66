"""Powers of two: weights on {0, ±2^k} (multiply = shift), and power-of-two scales.

Miyashita, Lee, Murmann, "Convolutional Neural Networks using Logarithmic Data
Representation", arXiv:1603.01025, 2016 (log quantization); Zhou et al., "Incremental
Network Quantization", ICLR 2017, arXiv:1702.03044 (weights on {0, ±2^k}).

Two different things, both for integer hardware:

    weights   Ŵ = sign(W)·2^e,  e ∈ {k_min, ..., k_max} or Ŵ = 0,
              k_max = the rounded exponent of max|W|,  k_min = k_max − (2^(b−1) − 2)
              b bits = 1 sign bit + (b−1) bits for 2^(b−1) − 1 exponents and one zero code.
              x·Ŵ is a shift of x by e, no multiplier. Gradient: straight through.
    scales    a uniform grid s·q whose scale is rounded to s' = 2^k, so rescaling an int32
              accumulator is a shift (Jacob et al. 2018 use an integer multiplier + shift).

Which rounding of the exponent (ROUNDINGS):
    "log"     e = round(log2 |W|): nearest in the log domain (Miyashita's LogQuant). The
              boundary between 2^e and 2^(e+1) is 2^(e+1/2) ≈ 1.414·2^e; |W| < 2^(k_min−1/2)
              becomes 0.
    "linear"  the nearest level in linear distance: the boundary is 1.5·2^e, and |W| < 2^(k_min−1)
              (half the smallest level) becomes 0. Smaller squared error for the same levels.

Entry points: quantize_power_of_two(model, bits=4, rounding="log", exclude=()),
quantize_power_of_two_scales(model, bits=8, per_channel=True, rounding="ceil", exclude=());
PowerOfTwoWeight, PowerOfTwoScaleWeight; ROUNDINGS, SCALE_ROUNDINGS; cores
round_power_of_two, log_rounding, linear_rounding; scale_rounding_error.
"""

import math

import torch
from torch import nn

from .. import _checks
from ._install import quantize_layers
from .fake_quant import FakeQuantWeight, _along
from .packing import pack_bits, unpack_bits
from .quantizers import fake_quantize_ste

__all__ = [
    "log_rounding",
    "linear_rounding",
    "ROUNDINGS",
    "round_power_of_two",
    "PowerOfTwoWeight",
    "quantize_power_of_two",
    "SCALE_ROUNDINGS",
    "PowerOfTwoScaleWeight",
    "quantize_power_of_two_scales",
    "scale_rounding_error",
]


def log_rounding(a, k_min):
    """Exponent of |W| = a rounded in the log domain: round(log2 a); −inf (zero) below k_min."""
    e = torch.round(torch.log2(a))
    return torch.where(e < k_min, -math.inf, e)


def linear_rounding(a, k_min):
    """Exponent of the level nearest to a in linear distance among {0, 2^k_min, 2^(k_min+1), ...}:
    2^(e+1) once a >= 1.5·2^e; −inf (zero) when a < 2^(k_min−1), half the smallest level."""
    e = torch.floor(torch.log2(a))
    e = e + (a >= 1.5 * torch.exp2(e))
    return torch.where(a < 2.0 ** (k_min - 1), -math.inf, e.clamp(min=k_min))


ROUNDINGS = {"log": log_rounding, "linear": linear_rounding}


def round_power_of_two(w, bits, rounding):
    """Core: (Ŵ, k_min). Ŵ = sign(W)·2^e with e in [k_min, k_max] or 0; gradient straight through.

    k_max is the rounded exponent of max|W| (so the largest weight keeps its nearest level);
    b bits hold 2^(b−1) − 1 exponents below it, a zero and a sign.
    """
    a = w.detach().abs()
    top = a.max()
    k_max = float(rounding(top, -math.inf)) if top > 0 else 0.0  # all-zero layer: any k
    k_min = k_max - (2 ** (bits - 1) - 2)
    e = rounding(a, k_min).clamp(max=k_max)  # −inf for the weights that become 0
    value = torch.sign(w.detach()) * torch.exp2(e)  # exp2(−inf) = 0
    return value + (w - w.detach()), int(k_min)


class PowerOfTwoWeight(nn.Module):
    """Parametrization W -> sign(W)·2^e (or 0) with b bits per weight, per layer.

    Args:
        bits: b, an int in [2, 8] (2 bits: {0, ±2^k_max}, a ternary grid).
        rounding: "log" (Miyashita) or "linear" (nearest level), see ROUNDINGS.

    Example:
        >>> w = torch.tensor([1.0, 0.72, 0.7, 0.3, 0.16, 0.1])   # 3 bits: {0, 1/4, 1/2, 1}
        >>> PowerOfTwoWeight(3, "log")(w)
        tensor([1.0000, 1.0000, 0.5000, 0.2500, 0.0000, 0.0000])
        >>> PowerOfTwoWeight(3, "linear")(w)
        tensor([1.0000, 0.5000, 0.5000, 0.2500, 0.2500, 0.0000])
    """

    def __init__(self, bits=4, rounding="log"):
        super().__init__()
        self.bits = _checks.check_int(bits, "bits", low=2, high=8)
        self.rounding = _checks.check_choice(rounding, "rounding", ROUNDINGS)

    def forward(self, weight):
        return round_power_of_two(weight, self.bits, ROUNDINGS[self.rounding])[0]

    def pack(self, weight):
        """b-bit codes: the top bit is the sign, the rest 0 (zero) or e − k_min + 1."""
        value, k_min = round_power_of_two(
            weight.detach(), self.bits, ROUNDINGS[self.rounding]
        )
        magnitude = torch.where(
            value == 0, 0, torch.log2(value.abs()).round().long() - k_min + 1
        )
        codes = magnitude + (value < 0) * 2 ** (self.bits - 1)
        return {
            "format": "power_of_two",
            "shape": tuple(weight.shape),
            "dtype": str(weight.dtype).removeprefix("torch."),
            "bits": self.bits,
            "k_min": k_min,
            "codes": pack_bits(codes, self.bits),
        }

    @staticmethod
    def unpack(packed):
        shape, bits = packed["shape"], packed["bits"]
        codes = unpack_bits(packed["codes"], bits, math.prod(shape)).reshape(shape)
        half = 2 ** (bits - 1)
        magnitude, negative = codes % half, codes >= half
        value = torch.where(
            magnitude == 0, 0.0, torch.exp2((magnitude - 1 + packed["k_min"]).float())
        )
        return torch.where(negative, -value, value).to(getattr(torch, packed["dtype"]))

    def extra_repr(self):
        return f"bits={self.bits}, rounding={self.rounding!r}"


def quantize_power_of_two(model, bits=4, rounding="log", exclude=()):
    """A copy of `model` with every Conv/Linear weight on {0, ±2^k} (`PowerOfTwoWeight`).

    Returns the copy in `model`'s mode; `model` is unchanged. Raises ValueError for bits
    outside [2, 8], an unknown rounding, nothing to quantize or a layer already quantized.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[0.9, -0.3, 0.05]]))
        >>> quantize_power_of_two(net, bits=3)[0].weight.detach()   # k_max = 0
        tensor([[ 1.0000, -0.2500,  0.0000]])
    """
    template = PowerOfTwoWeight(bits, rounding)
    return quantize_layers(
        model,
        lambda name, weight: PowerOfTwoWeight(template.bits, template.rounding),
        exclude,
    )


# How a scale s becomes a power of two: "ceil" never shrinks the range (no new clipping, up
# to 2x coarser steps); "nearest" rounds log2 s (steps within √2, but the largest weights
# clip when s shrinks).
SCALE_ROUNDINGS = {
    "ceil": lambda s: torch.exp2(torch.ceil(torch.log2(s))),
    "nearest": lambda s: torch.exp2(torch.round(torch.log2(s))),
}


class PowerOfTwoScaleWeight(FakeQuantWeight):
    """`FakeQuantWeight` (signed symmetric) whose scale is rounded to a power of two 2^k.

    Args:
        bits: an int in [2, 16].
        axis: per-channel axis (0) or None (per tensor).
        rounding: "ceil" or "nearest", see SCALE_ROUNDINGS.

    Packs as FakeQuantWeight does (the scale stored is the power of two).

    Example:
        >>> PowerOfTwoScaleWeight(bits=4, axis=None).qparams(torch.tensor([0.7, -0.3]))[0]
        tensor(0.1250)
    """

    def __init__(self, bits=8, axis=0, rounding="ceil"):
        super().__init__(bits, symmetric=True, signed=True, axis=axis)
        self.rounding = _checks.check_choice(rounding, "rounding", SCALE_ROUNDINGS)

    def qparams(self, weight):
        scale, zero_point = super().qparams(weight)
        return SCALE_ROUNDINGS[self.rounding](scale), zero_point

    def extra_repr(self):
        return super().extra_repr() + f", scale rounding={self.rounding!r}"


def quantize_power_of_two_scales(
    model, bits=8, per_channel=True, rounding="ceil", exclude=()
):
    """A copy of `model` with uniform signed symmetric weights whose scales are powers of two.

    Returns the copy in `model`'s mode; `model` is unchanged.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[0.7, -0.3]]))
        >>> quantize_power_of_two_scales(net, bits=4)[0].weight.detach()   # s = 2^-3
        tensor([[ 0.7500, -0.2500]])
    """
    per_channel = _checks.check_bool(per_channel, "per_channel")
    template = PowerOfTwoScaleWeight(bits, 0 if per_channel else None, rounding)
    return quantize_layers(
        model,
        lambda name, weight: PowerOfTwoScaleWeight(
            template.bits, template.axis, rounding
        ),
        exclude,
    )


def scale_rounding_error(weight, bits=8, axis=0):
    """The cost of a power-of-two scale: ‖Ŵ − W‖² / ‖W‖² with the float scale and with each
    of SCALE_ROUNDINGS, on the same signed symmetric grid.

    Returns:
        dict {"float": error, "ceil": error, "nearest": error}.

    Example:
        >>> w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
        >>> err = scale_rounding_error(w, bits=4)
        >>> err["float"] < err["ceil"]
        True
    """
    _checks.check_tensor(weight, "weight", finite=True)
    if not weight.is_floating_point():
        raise TypeError(
            f"weight must be a floating-point tensor, got dtype {weight.dtype}"
        )
    quantizers = {"float": FakeQuantWeight(bits, axis=axis)}
    quantizers.update(
        {r: PowerOfTwoScaleWeight(bits, axis, r) for r in SCALE_ROUNDINGS}
    )
    w = weight.detach()
    errors = {}
    for name, quantizer in quantizers.items():
        scale, zero_point = quantizer.qparams(w)
        s, z = _along(scale, quantizer.axis, w), _along(zero_point, quantizer.axis, w)
        w_hat = fake_quantize_ste(w, s, z, quantizer.qmin, quantizer.qmax)
        errors[name] = float(((w_hat - w) ** 2).sum() / (w**2).sum().clamp_min(1e-30))
    return errors
