"""Learned step size quantization (LSQ) and its learned offset (LSQ+): the step is a parameter.

Esser, McKinstry, Bablani, Appuswamy and Modha, "Learned Step Size Quantization", ICLR 2020,
arXiv:1902.08153; Bhalgat, Lee, Nagel, Blankevoort and Kwak, "LSQ+: Improving low-bit
quantization through learnable offsets and better initialization", CVPR Workshops 2020,
arXiv:2004.09576.

    v̂ = round(clamp(v / s, −Q_N, Q_P)) · s                    LSQ (Esser et al. Eq. 1-2)
    ∂v̂/∂v = 1 inside, 0 outside;  ∂v̂/∂s = −v/s + round(v/s) inside, −Q_N below, Q_P above
    the gradient of s multiplied by g = 1 / √(N · Q_P)         (§2.2), s₀ = 2⟨|v|⟩ / √Q_P
    v̂ = round(clamp((v − β) / s, 0, 2^b − 1)) · s + β           LSQ+ (Bhalgat et al. Eq. 4)
    ∂v̂/∂β = 0 inside, 1 outside (clipped values sit at the grid's ends, which β moves)

Signed grids (weights; activations with negative values): Q_N = 2^(b−1), Q_P = 2^(b−1) − 1;
unsigned grids (ReLU outputs): Q_N = 0, Q_P = 2^b − 1. N is the number of weights a step
serves (a layer, or one output channel) or the number of features of one example of an
activation.

    lsq_quantize, lsq_plus_quantize    the cores (formula in code, no checks)
    LSQWeight                          weight parametrization with a learned step per layer
                                       or per output channel
    LSQActQuant, LSQPlusActQuant       activation quantizers: learned step (and offset)

Where sources disagree:
- torch's `_fake_quantize_learnable_per_tensor_affine` rounds before it clips, so in the half
  step past each end of the grid its gradients are those of an inside value (∂/∂v = 1,
  ∂/∂s = round(v/s) − v/s); the paper clips first (∂/∂v = 0, ∂/∂s = −Q_N or Q_P), as we do.
  Values agree everywhere, gradients everywhere else.
- torch's `_LearnableFakeQuantize` counts the batch in N (g = 1/√(numel · Q_P)); the paper's
  N_F is the features of one example, which we follow.
- The gradient scale only matters with SGD (the paper's optimizer): Adam divides each
  parameter's gradient by its running RMS, so a constant factor g cancels out.
- LSQ+ initializes the activation step and offset by minimizing the quantization MSE; we take
  the range of least MSE that `MSEObserver` finds on the first batch (widened to contain 0, so
  that β/s starts at an integer), which is that idea on a grid of candidate ranges.
"""

import math

import torch
from torch import nn

from .. import _checks
from .fake_quant import _along
from .frozen import FrozenQuantWeight, _check_positive, frozen_act_quant
from .observers import MSEObserver
from .quantizers import EPS, qrange
from .ste import grad_scale, round_ste

__all__ = [
    "lsq_quantize",
    "lsq_plus_quantize",
    "LSQWeight",
    "LSQActQuant",
    "LSQPlusActQuant",
]


def lsq_quantize(v, s, qn, qp, g):
    """Core of LSQ: round(clamp(v/s, −Q_N, Q_P))·s, the gradient of s scaled by g.

    `s` broadcasts against v (a 0-d step, or (C, 1, 1, 1) per output channel); autograd of
    these two lines gives exactly the gradients of Esser et al. Eq. 3 (see the module
    docstring): the straight-through round makes ∂/∂s of round(v/s)·s equal round(v/s) − v/s.
    """
    s = grad_scale(s, g)
    return round_ste(torch.clamp(v / s, -qn, qp)) * s


def lsq_plus_quantize(v, s, beta, qn, qp, g):
    """Core of LSQ+: round(clamp((v − β)/s, −Q_N, Q_P))·s + β, the gradients of s and β
    scaled by g (Bhalgat et al. scale both as LSQ scales s)."""
    s, beta = grad_scale(s, g), grad_scale(beta, g)
    return round_ste(torch.clamp((v - beta) / s, -qn, qp)) * s + beta


class LSQWeight(nn.Module):
    """Weight parametrization W -> Ŵ = round(clamp(W/s, −Q_N, Q_P))·s with a learned step s.

    Esser et al., "Learned Step Size Quantization", ICLR 2020, arXiv:1902.08153. Signed grid
    Q_N = 2^(b−1), Q_P = 2^(b−1) − 1; s starts at 2⟨|W|⟩/√Q_P (the mean over the weights it
    serves); its gradient is scaled by g = 1/√(N·Q_P).

    Args:
        bits: an int in [2, 16] (1 bit has no signed LSQ grid: Q_P = 0).
        axis: 0 for one step per output channel, None for one per layer (the paper).

    Attributes:
        step: the learned step s, a Parameter: 0-d, or (C,) per channel.

    `initialize(weight)` sets s from the weight (prepare_qat calls it); `export(weight)`
    returns the inference pair (stored weight, frozen `FakeQuantWeight`) that `convert` installs.

    Example:
        >>> quant = LSQWeight(bits=2, axis=None)   # grid {-2, -1, 0, 1}·s
        >>> quant.initialize(torch.tensor([[0.5, -0.5, 1.5, -1.0]]))   # s = 2·0.875/√1
        >>> quant(torch.tensor([[0.5, -0.5, 1.5, -1.0]]))
        tensor([[ 0.0000,  0.0000,  1.7500, -1.7500]], grad_fn=<MulBackward0>)
    """

    def __init__(self, bits=4, axis=0):
        super().__init__()
        self.bits = _checks.check_int(bits, "weight_bits", low=2, high=16)
        if axis is not None:
            _checks.check_int(axis, "axis", low=0)
        self.axis = axis
        self.qmin, self.qmax = qrange(bits, signed=True)
        self.qn, self.qp = -self.qmin, self.qmax
        self.step = nn.Parameter(torch.tensor(1.0))
        self.g = 1.0  # set by initialize

    def initialize(self, weight):
        """s₀ = 2⟨|W|⟩/√Q_P (per channel when axis is set), floored at EPS; g = 1/√(N·Q_P)."""
        weight = weight.detach()
        if self.axis is None:
            mean_abs, n = weight.abs().mean(), weight.numel()
        else:
            rows = weight.transpose(0, self.axis).reshape(weight.shape[self.axis], -1)
            mean_abs, n = rows.abs().mean(dim=1), rows.shape[1]
        step = torch.clamp(2 * mean_abs / math.sqrt(self.qp), min=EPS)
        self.step = nn.Parameter(step.to(weight.dtype))
        self.g = 1.0 / math.sqrt(n * self.qp)

    def forward(self, weight):
        _check_positive(self.step, "LSQ step of a weight")
        s = _along(self.step, self.axis, weight)
        return lsq_quantize(weight, s, self.qn, self.qp, self.g)

    def export(self, weight):
        """(Ŵ, a FakeQuantWeight whose qparams are frozen at (s, 0)): what convert installs."""
        _check_positive(self.step, "LSQ step of a weight")
        scale = self.step.detach().float()
        quant = FrozenQuantWeight(
            self.bits, scale, torch.zeros_like(scale, dtype=torch.int32), axis=self.axis
        )
        return self.forward(weight).detach(), quant

    def extra_repr(self):
        return f"bits={self.bits}, grid=[-{self.qn}, {self.qp}], axis={self.axis}"


class LSQActQuant(nn.Module):
    """Activation quantizer x -> x̂ = round(clamp(x/s, −Q_N, Q_P))·s with a learned step s.

    Esser et al. 2020 (see `LSQWeight`). The grid is unsigned (Q_N = 0, Q_P = 2^b − 1) when
    the first batch has no negative value (ReLU outputs), signed otherwise (an image
    normalized to zero mean, say). s₀ = 2⟨|x|⟩/√Q_P and g = 1/√(N_F·Q_P), with N_F the
    number of features of one example, both from the first batch the module sees.

    Args:
        bits: an int in [1, 16] ([2, 16] for a signed grid).
        name: what error messages call this activation.

    Attributes:
        step: the learned step s (a 0-d Parameter); `signed`, `initialized` (plain values).

    Example:
        >>> act = LSQActQuant(bits=2); _ = act(torch.tensor([0.0, 0.5, 1.0, 2.5]))  # s₀ = 2·1/√3
        >>> act(torch.tensor([0.2, 0.9, 9.0]))   # unsigned grid {0, 1, 2, 3}·s₀
        tensor([0.0000, 1.1547, 3.4641], grad_fn=<MulBackward0>)
    """

    def __init__(self, bits=4, name="activation"):
        super().__init__()
        self.bits = _checks.check_int(bits, "act_bits", low=1, high=16)
        self.name = name
        self.step = nn.Parameter(torch.tensor(1.0))
        self.signed, self.initialized, self.g = False, False, 1.0
        self.qmin, self.qmax = qrange(bits)

    def initialize(self, x):
        """The grid's sign from the data, s₀ = 2⟨|x|⟩/√Q_P (floored at EPS), g = 1/√(N_F·Q_P)."""
        _checks.check_tensor(x, f"activation {self.name!r}", finite=True)
        self.signed = bool(x.min() < 0)
        if self.signed and self.bits < 2:
            raise ValueError(
                f"act_bits must be an int in [2, 16] for activation {self.name!r}: it has "
                f"negative values, which need a signed grid; got {self.bits}"
            )
        self.qmin, self.qmax = qrange(self.bits, signed=self.signed)
        qp = self.qmax
        step = torch.clamp(2 * x.detach().abs().mean() / math.sqrt(qp), min=EPS)
        self.step.data = step.to(self.step.dtype)
        self.g = 1.0 / math.sqrt(x[0].numel() * qp)
        self.initialized = True

    def forward(self, x):
        if not self.initialized:  # the first batch (prepare_qat's) sets the grid and s₀
            self.initialize(x.detach())
            return x
        _check_positive(self.step, f"LSQ step of activation {self.name!r}")
        return lsq_quantize(x, self.step.to(x.dtype), -self.qmin, self.qmax, self.g)

    def export(self):
        """The frozen `ActQuant` with scale s and zero point 0 on the same grid."""
        _check_positive(self.step, f"LSQ step of activation {self.name!r}")
        return frozen_act_quant(
            self.bits, self.signed, self.step.detach(), torch.tensor(0), self.name
        )

    def extra_repr(self):
        return f"name={self.name!r}, bits={self.bits}, grid=[{self.qmin}, {self.qmax}]"


class LSQPlusActQuant(nn.Module):
    """Activation quantizer x -> x̂ = round(clamp((x − β)/s, 0, 2^b − 1))·s + β, with a learned
    step s and a learned offset β (LSQ+, Bhalgat et al. 2020, arXiv:2004.09576).

    The unsigned grid moves with β, so negative activations (Swish, a normalized image) need
    no sign bit. Initialization: the range of least quantization MSE on the first batch
    (`MSEObserver`), widened to contain 0, gives s₀ = (max − min)/(2^b − 1) and β₀ = −s₀·z₀.
    Gradients of s and β are scaled by g = 1/√(N_F·Q_P).

    `convert` rounds the offset to an integer zero point z = round(−β/s) (integer kernels
    need one); this moves the grid by less than s/2.

    Args:
        bits: an int in [1, 16].
        name: what error messages call this activation.

    Attributes:
        step, offset: the learned s and β (0-d Parameters).

    Example:
        >>> act = LSQPlusActQuant(bits=8); _ = act(torch.linspace(-1, 3, 101))
        >>> round(-act.offset.item() / act.step.item(), 4)   # the grid starts at an integer zero point
        64.0
    """

    def __init__(self, bits=4, name="activation"):
        super().__init__()
        self.bits = _checks.check_int(bits, "act_bits", low=1, high=16)
        self.name = name
        self.qmin, self.qmax = qrange(bits)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.offset = nn.Parameter(torch.tensor(0.0))
        self.initialized, self.g = False, 1.0

    def initialize(self, x):
        """s₀ and β₀ from the least-MSE range of x (widened to contain 0), g = 1/√(N_F·Q_P)."""
        _checks.check_tensor(x, f"activation {self.name!r}", finite=True)
        observer = MSEObserver(self.bits)
        observer(x)
        scale, zero_point = observer.calculate_qparams()
        self.step.data = scale.to(self.step.dtype)
        self.offset.data = (-scale * zero_point).to(self.offset.dtype)
        self.g = 1.0 / math.sqrt(x[0].numel() * self.qmax)
        self.initialized = True

    def forward(self, x):
        if not self.initialized:
            self.initialize(x.detach())
            return x
        _check_positive(self.step, f"LSQ+ step of activation {self.name!r}")
        s, beta = self.step.to(x.dtype), self.offset.to(x.dtype)
        return lsq_plus_quantize(x, s, beta, -self.qmin, self.qmax, self.g)

    def export(self):
        """The frozen `ActQuant`: scale s, zero point round(−β/s) clamped to the grid."""
        _check_positive(self.step, f"LSQ+ step of activation {self.name!r}")
        scale = self.step.detach()
        zero_point = torch.clamp(
            torch.round(-self.offset.detach() / scale), self.qmin, self.qmax
        )
        return frozen_act_quant(self.bits, False, scale, zero_point, self.name)

    def extra_repr(self):
        return f"name={self.name!r}, bits={self.bits}, grid=[{self.qmin}, {self.qmax}] + offset"
