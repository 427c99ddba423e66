"""Ternary weights {−α, 0, +α}: Ternary Weight Networks (TWN) and Trained Ternary Quantization.

Li, Zhang, Liu, "Ternary Weight Networks", arXiv:1605.04711, 2016.
Zhu, Han, Mao, Dally, "Trained Ternary Quantization", ICLR 2017, arXiv:1612.01064.

    TWN   Δ = 0.7·mean|W|,  α = mean{|W_i| : |W_i| > Δ},  Ŵ_i = α·sign(W_i)·1[|W_i| > Δ]
          ∂L/∂W = ∂L/∂Ŵ (straight through); one α per layer (Li et al., eq. 5 and 6)
    TTQ   Δ = t·max|W| (t = 0.05),  Ŵ_i = W_p if W_i > Δ, −W_n if W_i < −Δ, else 0
          W_p, W_n > 0 trained:  ∂L/∂W_p = Σ_{i∈I_p} ∂L/∂Ŵ_i,  ∂L/∂W_n = −Σ_{i∈I_n} ∂L/∂Ŵ_i
          latent:  ∂L/∂W_i = W_p·∂L/∂Ŵ_i (i∈I_p),  1·∂L/∂Ŵ_i (|W_i| <= Δ),  W_n·∂L/∂Ŵ_i (i∈I_n)

Both pack as 2-bit codes (0: −, 1: zero, 2: +) plus their scale(s), 16x smaller than float32.

Entry points: ternarize(model, method="twn", exclude=()) returns a copy; TERNARY_METHODS;
TernaryWeight (TWN), TrainedTernaryWeight (TTQ); cores twn_ternarize, ttq_ternarize.

Note (paper vs code): TTQ's eq. 7 prints ∂L/∂W_n = Σ_{i∈I_n} ∂L/∂Ŵ_i; since Ŵ_i = −W_n there,
the chain rule gives the minus sign written above, which is what autograd computes and what
a descent step on W_n needs. TTQ starts from W_p = W_n = 1 on weights normalised by their
maximum; we start from a trained float layer, so W_p and W_n start at the TWN-style means of
the weights above and below ±Δ (the L2-optimal scales for that assignment).
"""

import math

import torch
from torch import nn

from .. import _checks
from ._install import quantize_layers
from .packing import pack_bits, unpack_bits

__all__ = [
    "twn_ternarize",
    "ttq_ternarize",
    "TernaryWeight",
    "TrainedTernaryWeight",
    "TERNARY_METHODS",
    "ternarize",
]

# Li et al. derive Δ* ≈ 0.6σ for a Gaussian and ≈ 0.7·E|W| for a uniform or Gaussian weight;
# 0.7·mean|W| is the rule they use (TWN, eq. 10).
TWN_FACTOR = 0.7
# TTQ's threshold factor t on CIFAR-10 and ImageNet (§3).
TTQ_THRESHOLD = 0.05


def twn_ternarize(w, factor=TWN_FACTOR):
    """Core of TWN: α·sign(W)·1[|W| > Δ] with Δ = factor·mean|W| and α the mean |W| above Δ;
    the gradient passes straight through to W."""
    a = w.detach().abs()
    delta = factor * a.mean()
    keep = a > delta
    alpha = a[keep].mean() if bool(keep.any()) else a.new_zeros(())  # an all-zero layer
    t = torch.where(keep, torch.sign(w.detach()), 0.0)  # {−1, 0, +1}
    return (alpha * t).detach() + (w - w.detach())


def ttq_ternarize(w, w_p, w_n, threshold=TTQ_THRESHOLD):
    """Core of TTQ: W_p·1[W > Δ] − W_n·1[W < −Δ] with Δ = threshold·max|W|.

    Autograd of the first line gives ∂L/∂W_p and ∂L/∂W_n; the second adds the latent gradient
    scaled by W_p, 1 or W_n (TTQ eq. 8) without changing the forward value.
    """
    delta = threshold * w.detach().abs().max()
    pos, neg = w.detach() > delta, w.detach() < -delta
    value = w_p * pos - w_n * neg
    factor = torch.where(pos, w_p.detach(), torch.where(neg, w_n.detach(), 1.0))
    return value + (w - w.detach()) * factor


class TernaryWeight(nn.Module):
    """Parametrization W -> α·{−1, 0, +1} with TWN's threshold and per-layer α.

    Args:
        factor: Δ = factor·mean|W|, a number > 0 (0.7, TWN's rule).

    Example:
        >>> w = torch.tensor([[1.0, -0.1, 0.5, -2.0]])   # Δ = 0.7·0.9 = 0.63, α = 1.5
        >>> TernaryWeight()(w)
        tensor([[ 1.5000,  0.0000,  0.0000, -1.5000]])
    """

    def __init__(self, factor=TWN_FACTOR):
        super().__init__()
        self.factor = _checks.check_real(factor, "factor", low=0, low_open=True)

    def forward(self, weight):
        return twn_ternarize(weight, self.factor)

    def pack(self, weight):
        """2-bit codes and α as a plain number."""
        value = twn_ternarize(weight.detach(), self.factor)
        alpha = float(value.abs().max())
        return _pack_ternary(weight, value, alpha, alpha)

    @staticmethod
    def unpack(packed):
        return _unpack_ternary(packed)

    def extra_repr(self):
        return f"factor={self.factor}"


class TrainedTernaryWeight(nn.Module):
    """Parametrization W -> {−W_n, 0, +W_p} with W_p, W_n trained (TTQ).

    Args:
        positive_scale: initial W_p, a number > 0.
        negative_scale: initial W_n, a number > 0.
        threshold: t in Δ = t·max|W|, a number in (0, 1) (0.05, TTQ's value).

    `positive_scale` and `negative_scale` are `nn.Parameter`s, so `train.fit`'s optimizer
    trains them with the model. `from_weight(W)` starts them at the mean |W| above / below ±Δ.

    Raises:
        ValueError (in forward): W_p or W_n was driven to zero or below by training (a
            ternary scale must stay positive: lower the learning rate).

    Example:
        >>> ttq = TrainedTernaryWeight(0.5, 0.25)
        >>> ttq(torch.tensor([[1.0, -0.04, 0.5, -2.0]])).detach()   # Δ = 0.05·2 = 0.1
        tensor([[ 0.5000,  0.0000,  0.5000, -0.2500]])
    """

    def __init__(self, positive_scale, negative_scale, threshold=TTQ_THRESHOLD):
        super().__init__()
        w_p = _checks.check_real(positive_scale, "positive_scale", low=0, low_open=True)
        w_n = _checks.check_real(negative_scale, "negative_scale", low=0, low_open=True)
        self.threshold = _checks.check_real(
            threshold, "threshold", low=0, high=1, low_open=True, high_open=True
        )
        self.positive_scale = nn.Parameter(torch.tensor(w_p))
        self.negative_scale = nn.Parameter(torch.tensor(w_n))

    @classmethod
    def from_weight(cls, weight, threshold=TTQ_THRESHOLD):
        """Scales started at the mean of the weights above Δ and of |W| below −Δ (the mean
        |W| where one side is empty)."""
        a = weight.detach()
        delta = threshold * a.abs().max()
        fallback = float(a.abs().mean()) or 1.0
        w_p = float(a[a > delta].mean()) if bool((a > delta).any()) else fallback
        w_n = float(-a[a < -delta].mean()) if bool((a < -delta).any()) else fallback
        return cls(w_p, w_n, threshold)

    def forward(self, weight):
        for name in ("positive_scale", "negative_scale"):
            value = float(getattr(self, name).detach())
            if not value > 0:  # also NaN
                raise ValueError(
                    f"TTQ {name} was driven to {value:.4g} by training; a ternary scale must "
                    "stay > 0 (lower the learning rate, or exclude this layer)"
                )
        return ttq_ternarize(
            weight, self.positive_scale, self.negative_scale, self.threshold
        )

    def pack(self, weight):
        """2-bit codes and W_p, W_n as plain numbers."""
        value = self.forward(weight.detach()).detach()
        return _pack_ternary(
            weight,
            value,
            float(self.positive_scale.detach()),
            float(self.negative_scale.detach()),
        )

    @staticmethod
    def unpack(packed):
        return _unpack_ternary(packed)

    def extra_repr(self):
        return (
            f"threshold={self.threshold}, positive_scale={float(self.positive_scale.detach()):.4g}, "
            f"negative_scale={float(self.negative_scale.detach()):.4g}"
        )


# name -> maker(weight) of the weight parametrization (2 bits per weight for both).
TERNARY_METHODS = {
    "twn": lambda weight: TernaryWeight(),
    "ttq": lambda weight: TrainedTernaryWeight.from_weight(weight),
}


def ternarize(model, method="twn", exclude=()):
    """A copy of `model` with ternary weights on every Conv/Linear layer.

    Args:
        model: any nn.Module.
        method: "twn" (threshold 0.7·mean|W|, α per layer, nothing trained but W) or "ttq"
            (threshold 0.05·max|W|, W_p and W_n trained).
        exclude: names of layers left in float.

    Returns:
        The copy, in `model`'s mode; `model` is unchanged. Train it with `train.fit`.

    Raises:
        ValueError: an unknown method, nothing to quantize, a layer already quantized.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[1.0, -0.1, 0.5, -2.0]]))
        >>> ternarize(net, "twn")[0].weight.detach()
        tensor([[ 1.5000,  0.0000,  0.0000, -1.5000]])
    """
    make = TERNARY_METHODS[_checks.check_choice(method, "method", TERNARY_METHODS)]
    return quantize_layers(model, lambda name, weight: make(weight), exclude)


# ---------------------------------------------------------------------------------------------


def _pack_ternary(weight, value, positive, negative):
    codes = (torch.sign(value) + 1).long()  # 0: −, 1: 0, 2: +
    return {
        "format": "ternary",
        "shape": tuple(weight.shape),
        "dtype": str(weight.dtype).removeprefix("torch."),
        "positive_scale": positive,
        "negative_scale": negative,
        "codes": pack_bits(codes, 2),
    }


def _unpack_ternary(packed):
    shape, dtype = packed["shape"], getattr(torch, packed["dtype"])
    codes = unpack_bits(packed["codes"], 2, math.prod(shape)).reshape(shape)
    levels = torch.tensor(
        [-packed["negative_scale"], 0.0, packed["positive_scale"]], dtype=torch.float32
    )
    return levels[codes].to(dtype)
