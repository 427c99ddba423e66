"""Straight-through QAT (Jacob et al. 2018): min-max weights, moving-average activation ranges,
and BatchNorm folded into the weights during training (Krishnamoorthi 2018).

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, arXiv:1712.05877, §3; Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference: A whitepaper", arXiv:1806.08342, 2018, §3.2.

    Ŵ = s·clamp(round(W/s), q_min, q_max),  s = max|W| / ((q_max − q_min)/2)     every step
    [a, b] ← [a, b] + c·([min x, max x] − [a, b])     EMA of the batch range, c = 0.01
    x̂ = s·(clamp(round(x/s) + z, q_min, q_max) − z),  (s, z) from [a, b]         affine
    ∂x̂/∂x = 1 inside the grid, 0 where clipped (the clipped straight-through estimator)

BatchNorm during training (`ConvBN`, Krishnamoorthi Fig. 9): the weights are folded with the
running σ, W·γ/σ, and quantized as the integer model will see them; the convolution output
is then divided by γ/σ again and normalized with the batch's statistics, so the layer
computes conv(x, Q(W·γ/σ))·σ/σ_B + β − γμ_B/σ_B (the correction σ/σ_B of the paper). After
`freeze_bn_after` training steps the running statistics stop moving and replace the batch
ones (σ/σ_B = 1): the layer is then exactly the folded convolution it becomes at inference.

    STEWeight            a FakeQuantWeight (the PTQ weight quantizer) with the QAT protocol
    EMAActQuant          activation range tracked with an EMA during training
    FixedRangeActQuant   activation range of the first batch, kept fixed
    ConvBN               a Conv and its BatchNorm trained with the BatchNorm folded in
"""

import torch
from torch import nn

from .. import _checks
from .fake_quant import FakeQuantWeight
from .folding import fold_bn_weights
from .frozen import frozen_act_quant
from .quantizers import affine_qparams, fake_quantize_ste, qrange

__all__ = ["STEWeight", "EMAActQuant", "FixedRangeActQuant", "ConvBN"]


class STEWeight(FakeQuantWeight):
    """Weight parametrization Ŵ = s·clamp(round(W/s)) with s = max|W|/((q_max − q_min)/2),
    recomputed from the current W every step, and the straight-through gradient.

    Exactly `FakeQuantWeight` (signed symmetric): Jacob et al. train the weights under the
    quantizer post-training quantization will apply, so `export` keeps it as it is.

    Args:
        bits: an int in [2, 16].
        axis: 0 for one scale per output channel, None for one per layer.
    """

    def __init__(self, bits=8, axis=0):
        _checks.check_int(bits, "weight_bits", low=2, high=16)
        super().__init__(bits, symmetric=True, signed=True, axis=axis)

    def initialize(self, weight):
        """Nothing to set: the range is read from the weight at every step."""

    def export(self, weight):
        """(W, the FakeQuantWeight that computes the same Ŵ)."""
        return weight.detach(), FakeQuantWeight(self.bits, True, True, False, self.axis)


class EMAActQuant(nn.Module):
    """Activation quantizer with an exponential moving average of the batch range (Jacob et
    al. 2018, §3.1), affine on the unsigned grid [0, 2^b − 1].

    The first batch sets [a, b]; every training batch then moves it by c·([min x, max x] −
    [a, b]); in eval mode the range stays. The grid is computed from [a, b] as `qparams`
    does (widened to contain 0), and x̂ has the clipped straight-through gradient.

    Args:
        bits: an int in [1, 16].
        name: what error messages call this activation.
        averaging_constant: c, a number in [0, 1]; 0 keeps the first batch's range.

    Example:
        >>> act = EMAActQuant(bits=2, averaging_constant=0.5); _ = act(torch.tensor([0.0, 3.0]))
        >>> _ = act(torch.tensor([0.0, 5.0]))   # training mode: max 3 -> 3 + 0.5·(5 − 3) = 4
        >>> float(act.max_val)
        4.0
    """

    def __init__(self, bits=8, name="activation", averaging_constant=0.01):
        super().__init__()
        self.bits = _checks.check_int(bits, "act_bits", low=1, high=16)
        self.averaging_constant = _checks.check_real(
            averaging_constant, "averaging_constant", low=0, high=1
        )
        self.name, self.initialized = name, False
        self.qmin, self.qmax = qrange(bits)
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))

    def initialize(self, x):
        """[a, b] = [min x, max x] of the first batch."""
        _checks.check_tensor(x, f"activation {self.name!r}", finite=True)
        self.min_val, self.max_val = (v.float() for v in torch.aminmax(x.detach()))
        self.initialized = True

    def forward(self, x):
        if not self.initialized:  # the first batch (prepare_qat's) sets the range
            self.initialize(x)
            return x
        if self.training and self.averaging_constant > 0:
            with torch.no_grad():  # the range is a statistic, not a learned value
                lo, hi = torch.aminmax(x.detach().float())
                c = self.averaging_constant
                self.min_val += c * (lo - self.min_val)
                self.max_val += c * (hi - self.max_val)
        s, z = affine_qparams(self.min_val, self.max_val, self.qmin, self.qmax)
        return fake_quantize_ste(x, s.to(x.dtype), z.to(x.dtype), self.qmin, self.qmax)

    def export(self):
        """The frozen `ActQuant` with the (scale, zero_point) of the current range."""
        s, z = affine_qparams(self.min_val, self.max_val, self.qmin, self.qmax)
        return frozen_act_quant(self.bits, False, s, z, self.name)

    def extra_repr(self):
        return (
            f"name={self.name!r}, bits={self.bits}, "
            f"averaging_constant={self.averaging_constant}"
        )


class FixedRangeActQuant(EMAActQuant):
    """`EMAActQuant` with c = 0: the range of the first batch, fixed during training."""

    def __init__(self, bits=8, name="activation"):
        super().__init__(bits, name, averaging_constant=0.0)


class ConvBN(nn.Module):
    """A Conv and the BatchNorm after it, trained with the BatchNorm folded into the weights.

    Krishnamoorthi 2018, §3.2.2 and Fig. 9 (after Jacob et al. 2018, §3.2). With
    f = γ/√(running var + ε) per output channel:

        training:          bn_batch( conv(x, Q(W·f)) / f + b )     = conv(x, Q(W·f))·σ/σ_B + ...
        eval, or frozen:   conv(x, Q(W·f)) + β + (b − μ)·f          (the folded layer)

    Q is the method's weight quantizer (`weight_quant`, the identity until prepare_qat sets
    it). The weights are always quantized as folded with the running σ, so they do not jitter
    with each batch's σ_B; the batch statistics enter only through the output correction.

    Args:
        conv: a Conv1d/2d/3d.
        bn: the BatchNorm1d/2d/3d reading its output (with running statistics; no γ = 0).
        freeze_bn_after: training steps (forward passes in training mode) after which the
            running statistics are frozen and used in training too; None never freezes.

    Attributes:
        steps: training forward passes so far (a buffer).

    Example:
        >>> conv, bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)
        >>> x = torch.randn(4, 1, 5, 5)
        >>> torch.allclose(ConvBN(conv, bn)(x), bn(conv(x)), atol=1e-5)   # training mode
        True
    """

    def __init__(self, conv, bn, freeze_bn_after=None):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.weight_quant = nn.Identity()
        self.freeze_bn_after = freeze_bn_after
        self.register_buffer("steps", torch.tensor(0))

    @property
    def bn_frozen(self):
        return (
            self.freeze_bn_after is not None and int(self.steps) >= self.freeze_bn_after
        )

    def folded(self):
        """(W·f, β + (b − μ)·f) with the running statistics: the inference layer's weight and
        bias (`folding.fold_bn_weights`, as `fold_batchnorm` computes them)."""
        bn = self.bn
        return fold_bn_weights(
            self.conv.weight,
            self.conv.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
            bn.weight,
            bn.bias,
        )

    def forward(self, x):
        weight, bias = self.folded()
        y = self.conv._conv_forward(x, self.weight_quant(weight), None)
        shape = [1, -1] + [1] * (y.dim() - 2)  # (1, C, 1, 1) against a Conv2d output
        if self.training:
            self.steps += 1
        if not self.training or self.bn_frozen:
            return y + bias.reshape(shape)
        factor = torch.rsqrt(self.bn.running_var + self.bn.eps)
        if self.bn.weight is not None:
            factor = self.bn.weight * factor  # γ/σ, as folded into the weight
        y = y / factor.reshape(shape)
        if self.conv.bias is not None:
            y = y + self.conv.bias.reshape(shape)
        return self.bn(y)  # batch statistics; the running ones update

    def extra_repr(self):
        return f"freeze_bn_after={self.freeze_bn_after}"
