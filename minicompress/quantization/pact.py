"""PACT: a learned clipping value α per activation, quantized uniformly on [0, α].

Choi, Wang, Venkataramani, Chuang, Srinivasan and Gopalakrishnan, "PACT: Parameterized
Clipping Activation for Quantized Neural Networks", arXiv:1805.06085, 2018, §2.

    y = clip(x, 0, α) = 0.5·(|x| − |x − α| + α)                                 Eq. 1
    ŷ = round(y·(2^k − 1)/α)·α/(2^k − 1)                                        Eq. 2
    ∂ŷ/∂x = 1 for 0 ≤ x < α, else 0;   ∂ŷ/∂α = 1 for x ≥ α, else 0            Eq. 3

The gradient of α is the paper's: round is the identity (straight-through), so α only
learns from the values it clips, and α also scales the grid without that showing in the
gradient. The paper starts α at 10 and trains from scratch with an L2 penalty on α; we start
from a trained float model, so α starts at the largest value of the first batch (the range
min-max calibration would give) and takes the optimizer's weight decay if the caller sets one.
Weights: the paper quantizes them with DoReFa's scheme (`dorefa.DoReFaWeight`), whose fixed
[−1, 1] range assumes BatchNorm after each layer; `prepare_qat(method="pact")` installs the
min-max weight quantizer of "ste" (`qat_ste.STEWeight`) instead, so that "pact" and "ste"
differ by their activation quantizers only.

    pact_quantize   the core
    PACTActQuant    activation quantizer with the learned α
"""

import torch
from torch import nn

from .. import _checks
from .frozen import _check_positive, frozen_act_quant
from .quantizers import EPS
from .ste import straight_through

__all__ = ["pact_quantize", "PACTActQuant"]


def pact_quantize(x, alpha, bits):
    """Core: ŷ = round(clip(x, 0, α)·(2^k − 1)/α)·α/(2^k − 1), gradients of Eq. 3."""
    n = 2**bits - 1
    # clip(x, 0, α), written so that autograd gives ∂y/∂α = 1 exactly where x ≥ α
    y = torch.where(x >= alpha, alpha, torch.clamp(x, min=0.0))
    return straight_through(y, torch.round(y * (n / alpha)) * (alpha / n))


class PACTActQuant(nn.Module):
    """Activation quantizer x -> round(clip(x, 0, α)·(2^k − 1)/α)·α/(2^k − 1), α learned.

    Choi et al. 2018, arXiv:1805.06085. Negative inputs become 0: PACT replaces a ReLU.

    Args:
        bits: k, an int in [1, 16].
        name: what error messages call this activation.

    Attributes:
        alpha: the learned clipping value α (a 0-d Parameter), started at the first
            batch's maximum (floored at EPS).

    Example:
        >>> act = PACTActQuant(bits=2); _ = act(torch.tensor([0.0, 3.0]))   # α starts at 3
        >>> act(torch.tensor([-1.0, 0.8, 2.0, 5.0]))   # grid {0, 1, 2, 3}: α/3 = 1
        tensor([0., 1., 2., 3.], grad_fn=<AddBackward0>)
    """

    def __init__(self, bits=4, name="activation"):
        super().__init__()
        self.bits = _checks.check_int(bits, "act_bits", low=1, high=16)
        self.name, self.initialized = name, False
        self.alpha = nn.Parameter(torch.tensor(1.0))

    def initialize(self, x):
        """α₀ = max(x) of the first batch, floored at EPS."""
        _checks.check_tensor(x, f"activation {self.name!r}", finite=True)
        self.alpha.data = torch.clamp(x.detach().max(), min=EPS).to(self.alpha.dtype)
        self.initialized = True

    def forward(self, x):
        if not self.initialized:  # the first batch (prepare_qat's) sets α₀
            self.initialize(x)
            return x
        _check_positive(
            self.alpha, f"PACT clipping value α of activation {self.name!r}"
        )
        return pact_quantize(x, self.alpha.to(x.dtype), self.bits)

    def export(self):
        """The frozen `ActQuant` on [0, 2^k − 1] with scale α/(2^k − 1), zero point 0."""
        _check_positive(
            self.alpha, f"PACT clipping value α of activation {self.name!r}"
        )
        scale = self.alpha.detach() / (2**self.bits - 1)
        return frozen_act_quant(self.bits, False, scale, torch.tensor(0), self.name)

    def extra_repr(self):
        return f"name={self.name!r}, bits={self.bits}"
