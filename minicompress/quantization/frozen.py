"""Frozen quantizers: what a trained quantizer becomes at inference, in post-training form.

Quantization-aware training learns a step, an offset or a clipping value; `qat.convert` hands
the result over as the modules `quantize_ptq` leaves behind, so that everything downstream
(size on disk, integer kernels, export) reads a QAT model like a PTQ one:

    FrozenQuantWeight    a `FakeQuantWeight` whose (scale, zero_point) are fixed buffers
                         instead of being recomputed from the weight's min and max
    frozen_act_quant     a frozen `ActQuant` on a given grid with given (scale, zero_point)
"""

import math

import torch

from .fake_quant import ActQuant, FakeQuantWeight
from .observers import MinMaxObserver

__all__ = ["FrozenQuantWeight", "frozen_act_quant"]


class FrozenQuantWeight(FakeQuantWeight):
    """Parametrization W -> Ŵ = s·(clamp(round(W/s) + z) − z) with s and z fixed.

    A `FakeQuantWeight` (same attributes, `qparams`, `pack`, `unpack`) whose qparams are
    buffers: a learned LSQ step, or the grid of DoReFa weights, survives as it was trained.

    Args:
        bits: an int in [2, 16] (signed symmetric grid).
        scale: float32, 0-d (axis None) or (C,) along `axis`; every entry > 0.
        zero_point: int32 of scale's shape.
        restricted: restricted signed grid [−(2^(b−1) − 1), 2^(b−1) − 1].
        axis: the channel dimension the qparams run along, or None.

    Example:
        >>> quant = FrozenQuantWeight(4, torch.tensor(0.25), torch.tensor(0, dtype=torch.int32), axis=None)
        >>> quant(torch.tensor([0.3, -2.6, 1.0]))   # steps of 0.25; the grid ends at -8·0.25
        tensor([ 0.2500, -2.0000,  1.0000])
    """

    def __init__(self, bits, scale, zero_point, restricted=False, axis=None):
        symmetric = bool((zero_point == 0).all())
        super().__init__(bits, symmetric, True, restricted, axis)
        expected = () if axis is None else scale.shape[:1]
        if scale.dim() != len(expected) or zero_point.shape != scale.shape:
            raise ValueError(
                f"scale and zero_point must have one shape, 0-d for axis=None or (C,) "
                f"per channel, got {tuple(scale.shape)} and {tuple(zero_point.shape)}"
            )
        if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
            raise ValueError("scale must be finite and > 0 everywhere")
        self.register_buffer("scale", scale.detach().clone().to(torch.float32))
        self.register_buffer("zero_point", zero_point.detach().clone().to(torch.int32))

    def qparams(self, weight):
        """The frozen (scale, zero_point), whatever the weight."""
        return self.scale, self.zero_point

    def extra_repr(self):
        return super().extra_repr() + ", frozen qparams"


def frozen_act_quant(bits, signed, scale, zero_point, name="activation"):
    """A frozen `ActQuant` on the `bits`-bit grid (signed or not) with the given 0-d
    (scale, zero_point): the module `quantize_ptq` leaves on an activation after calibration.

    Example:
        >>> act = frozen_act_quant(2, False, torch.tensor(0.5), torch.tensor(0))
        >>> act(torch.tensor([-1.0, 0.7, 9.0]))   # grid {0, 1, 2, 3}·0.5
        tensor([0.0000, 0.5000, 1.5000])
    """
    act = ActQuant(MinMaxObserver(bits, symmetric=signed, signed=signed), name)
    act.freeze(
        torch.as_tensor(scale).float().reshape(()),
        torch.as_tensor(zero_point).to(torch.int32).reshape(()),
    )
    return act


# ---------------------------------------------------------------------------------------------


def _check_positive(value, what):
    """A learned step or clipping value must stay finite and > 0. We raise rather than clamp
    at a floor: a clamped step would let a diverging run go on training a layer whose output
    is a constant, while the error names the quantizer and the cause."""
    if bool(((value > 0) & (value < math.inf)).all()):  # NaN fails both comparisons
        return
    flat = value.detach().flatten()
    bad = flat[~((flat > 0) & (flat < math.inf))]
    raise ValueError(
        f"{what} must stay finite and > 0, got {float(bad[0]):.4g}: the learning rate "
        "is too high for it (lower the rate, or give the quantizer parameters their own)"
    )
