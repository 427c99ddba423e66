"""Narrower floats: float16 and bfloat16, their rounding error, and a weight cast.

Micikevicius et al., "Mixed Precision Training", ICLR 2018, arXiv:1710.03740 (float16);
Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322, 2019.

    float16:   1 sign, 5 exponent, 10 mantissa bits; largest 65504, unit roundoff u = 2^-11
    bfloat16:  1 sign, 8 exponent,  7 mantissa bits; float32's range,  u = 2^-8

Rounding to nearest gives |x̂ − x| <= u·|x| for every x in the normal range (|x| >= the
smallest normal, 2^-14 for float16 and 2^-126 for bfloat16) and below the largest finite value;
beyond it float16 overflows to ±inf. Unlike integer quantization there is no scale to
calibrate: the relative error is the same everywhere in the range.

Entry points: FLOAT_FORMATS, round_trip(x, format), round_trip_error(x, format), CastWeight.
"""

import torch
from torch import nn

from .. import _checks

__all__ = ["FLOAT_FORMATS", "round_trip", "round_trip_error", "CastWeight"]

# name -> (dtype, exponent bits, mantissa bits); u = 2^-(mantissa + 1) with round to nearest.
FLOAT_FORMATS = {
    "float16": (torch.float16, 5, 10),
    "bfloat16": (torch.bfloat16, 8, 7),
}


def round_trip(x, format):
    """x cast to `format` ("float16" or "bfloat16") and back to its own dtype.

    Example:
        >>> round_trip(torch.tensor([1/3, 70000.0]), "float16")   # 65504 is float16's largest
        tensor([0.3333,    inf])
    """
    _checks.check_choice(format, "format", FLOAT_FORMATS)
    _checks.check_tensor(x, "x")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    return x.to(FLOAT_FORMATS[format][0]).to(x.dtype)


def round_trip_error(x, format):
    """How much `round_trip` changes x.

    Returns:
        dict with "max_abs_error" and "max_rel_error" (over the finite results and nonzero x),
        "unit_roundoff" u = 2^-(mantissa bits + 1), the bound on the relative error in the
        normal range, and "overflow", how many finite values became infinite.

    Example:
        >>> err = round_trip_error(torch.linspace(1, 2, 1001), "bfloat16")
        >>> err["max_rel_error"] <= err["unit_roundoff"] == 2 ** -8
        True
    """
    _checks.check_tensor(x, "x", finite=True)
    y = round_trip(x, format)
    finite = torch.isfinite(y)
    error = (y - x).abs()[finite]
    nonzero = finite & (x != 0)
    relative = (y - x).abs()[nonzero] / x.abs()[nonzero]
    return {
        "max_abs_error": float(error.max()) if error.numel() else 0.0,
        "max_rel_error": float(relative.max()) if relative.numel() else 0.0,
        "unit_roundoff": 2.0 ** -(FLOAT_FORMATS[format][2] + 1),
        "overflow": int((~finite).sum()),
    }


class CastWeight(nn.Module):
    """Parametrization W -> W rounded to float16 or bfloat16 (computed in W's dtype).

    Packs itself (the `packing` protocol) as the 2-byte values, so
    `measure.size_bytes(model, format="packed")` counts 2 bytes per weight.
    """

    def __init__(self, format="float16"):
        super().__init__()
        self.format = _checks.check_choice(format, "format", FLOAT_FORMATS)

    def forward(self, weight):
        return weight.to(FLOAT_FORMATS[self.format][0]).to(weight.dtype)

    def pack(self, weight):
        return {
            "format": "float",
            "dtype": str(weight.dtype).removeprefix("torch."),
            "values": weight.detach().to(FLOAT_FORMATS[self.format][0]),
        }

    @staticmethod
    def unpack(packed):
        return packed["values"].to(getattr(torch, packed["dtype"]))

    def extra_repr(self):
        return f"format={self.format!r}"
