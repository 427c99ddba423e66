"""DoReFa-Net quantizers: tanh-normalized k-bit weights and k-bit activations of clip(x, 0, 1).

Zhou, Wu, Ni, Zhou, Wen and Zou, "DoReFa-Net: Training Low Bitwidth Convolutional Neural
Networks with Low Bitwidth Gradients", arXiv:1606.06160, 2016, §2.

    quantize_k(r) = round((2^k − 1)·r) / (2^k − 1)                 r ∈ [0, 1], Eq. 5
    Ŵ = 2·quantize_k( tanh(W) / (2·max|tanh(W)|) + 1/2 ) − 1       weights in [−1, 1], Eq. 9
    x̂ = quantize_k(clip(x, 0, 1))                                  activations, §2.4
    gradients: round is the identity (straight-through); autograd runs through tanh, the
    division by max|tanh W| and the clip (∂x̂/∂x = 1 on [0, 1], 0 outside)

No parameter is learned: the weights adapt to the grid. The grid of the weights is
{−1, −1 + 2/(2^k − 1), ..., 1}: 2^k levels symmetric around 0 without 0 itself, which an
integer kernel stores as odd codes on a (k + 1)-bit signed grid with step 1/(2^k − 1)
(`export`). DoReFa networks have BatchNorm after each layer, which absorbs the fixed weight
scale; without it the first layers' outputs saturate the activation clip at 1.

    dorefa_weight, dorefa_activation, quantize_k    the cores
    DoReFaWeight                                    weight parametrization
    DoReFaActQuant                                  activation quantizer

The paper's gradient quantization and its special 1-bit weight rule (sign·E|W|) are not
implemented: `DoReFaWeight` at 1 bit gives {−1, 1}.
"""

import torch
from torch import nn

from .. import _checks
from .frozen import FrozenQuantWeight, frozen_act_quant
from .quantizers import EPS
from .ste import round_ste

__all__ = [
    "quantize_k",
    "dorefa_weight",
    "dorefa_activation",
    "DoReFaWeight",
    "DoReFaActQuant",
]


def quantize_k(r, bits):
    """Core: round((2^k − 1)·r)/(2^k − 1) with the straight-through gradient (r in [0, 1])."""
    n = 2**bits - 1
    return round_ste(r * n) / n


def dorefa_weight(w, bits, axis=None):
    """Core: 2·quantize_k(tanh(W)/(2·max|tanh W|) + 1/2) − 1; the max per tensor (axis None,
    the paper) or per index of `axis`. The max is floored at EPS (an all-zero W)."""
    t = torch.tanh(w)
    dims = [d for d in range(w.dim()) if d != axis] if axis is not None else None
    m = t.abs().amax(dim=dims, keepdim=True) if dims else t.abs().max()
    r = t / (2 * torch.clamp(m, min=EPS)) + 0.5  # in [0, 1]
    return 2 * quantize_k(r, bits) - 1


def dorefa_activation(x, bits):
    """Core: quantize_k(clip(x, 0, 1))."""
    return quantize_k(torch.clamp(x, 0.0, 1.0), bits)


class DoReFaWeight(nn.Module):
    """Weight parametrization W -> Ŵ = 2·quantize_k(tanh(W)/(2·max|tanh W|) + 1/2) − 1.

    Zhou et al. 2016, arXiv:1606.06160, Eq. 9. Ŵ lies in [−1, 1] whatever the scale of W.

    Args:
        bits: k, an int in [1, 15] (the inference grid needs k + 1 bits).
        axis: None for one max|tanh W| per layer (the paper), 0 for one per output channel.

    Example:
        >>> DoReFaWeight(bits=2, axis=None)(torch.tensor([1.0, -0.2, 0.05, -2.0]))  # grid ±1/3, ±1
        tensor([ 1.0000, -0.3333,  0.3333, -1.0000])
    """

    def __init__(self, bits=4, axis=None):
        super().__init__()
        self.bits = _checks.check_int(bits, "weight_bits", low=1, high=15)
        if axis is not None:
            _checks.check_int(axis, "axis", low=0)
        self.axis = axis

    def initialize(self, weight):
        """Nothing to set: DoReFa learns no quantizer parameter."""

    def forward(self, weight):
        return dorefa_weight(weight, self.bits, self.axis)

    def export(self, weight):
        """(Ŵ, a frozen FakeQuantWeight on the (k + 1)-bit restricted grid with step
        1/(2^k − 1)): Ŵ·(2^k − 1) are the odd integers in [−(2^k − 1), 2^k − 1]."""
        scale = torch.tensor(1.0 / (2**self.bits - 1))
        zero = torch.tensor(0, dtype=torch.int32)
        quant = FrozenQuantWeight(self.bits + 1, scale, zero, restricted=True)
        return self.forward(weight).detach(), quant

    def extra_repr(self):
        return f"bits={self.bits}, axis={self.axis}"


class DoReFaActQuant(nn.Module):
    """Activation quantizer x -> x̂ = quantize_k(clip(x, 0, 1)) (Zhou et al. 2016, §2.4).

    Args:
        bits: k, an int in [1, 16].
        name: what error messages call this activation.

    Example:
        >>> act = DoReFaActQuant(bits=2); _ = act(torch.zeros(1))   # the first batch only initializes
        >>> act(torch.tensor([-0.5, 0.2, 0.5, 3.0]))   # grid {0, 1/3, 2/3, 1}; 0.5·3 rounds to 2
        tensor([0.0000, 0.3333, 0.6667, 1.0000])
    """

    def __init__(self, bits=4, name="activation"):
        super().__init__()
        self.bits = _checks.check_int(bits, "act_bits", low=1, high=16)
        self.name, self.initialized = name, False

    def initialize(self, x):
        """Nothing to set from data: the range is [0, 1] by definition."""
        self.initialized = True

    def forward(self, x):
        if not self.initialized:
            self.initialize(x)
            return x
        return dorefa_activation(x, self.bits)

    def export(self):
        """The frozen `ActQuant` on [0, 2^k − 1] with scale 1/(2^k − 1)."""
        scale = torch.tensor(1.0 / (2**self.bits - 1))
        return frozen_act_quant(self.bits, False, scale, torch.tensor(0), self.name)

    def extra_repr(self):
        return f"name={self.name!r}, bits={self.bits}"
