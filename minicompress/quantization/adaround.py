"""AdaRound: learn, for every weight, whether to round it down or up.

Nagel, Amjad, van Baalen, Louizos, Blankevoort, "Up or Down? Adaptive Rounding for
Post-Training Quantization", ICML 2020, arXiv:2004.10568, §3-4. Rounding each weight to the
nearest grid point minimises each weight's own error, not the layer's output error: the
errors of the weights a neuron sums interact. AdaRound keeps the grid (s, z) and chooses
floor or ceil per weight to minimise the layer's reconstruction error on unlabelled data:

    W̃ = s · (clamp(⌊W/s⌋ + h(V) + z, q_min, q_max) − z)
    h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1       the rectified sigmoid
    min_V ‖Wx − W̃x‖²_F + λ Σ (1 − |2h(V) − 1|^β)                  β annealed from 20 to 2

The regularizer pulls every h(V) to 0 or 1 as β falls; at the end h is replaced by the hard
choice 1[V ≥ 0] (h ≥ ½). Layers are rounded one at a time in the order the model calls them,
each on the inputs it receives from the layers already rounded. Defaults are the paper's
(§5: 10,000 Adam iterations at 10⁻³ on batches of 32 drawn from about 1,000 unlabelled
images) and, for λ = 0.01 and the 20 % warm-up without the regularizer, those of AIMET, the
authors' library; on a CPU, pass fewer `iterations` (our notebook uses a few hundred).

Entry point: adaround(model, loader, ...) on a model whose weights carry `FakeQuantWeight`
(from `quantize_weights` or `quantize_ptq`): each is replaced by an `AdaRoundWeight` with the
same grid, which packs like it (`measure.size_bytes(model, "packed")`). Cores:
rectified_sigmoid, rounding_regularizer, annealed_beta, optimize_rounding.

Note: the paper's final recipe also passes the layer's output through its activation function
and takes the float target from the float model (§4.2, "asymmetric reconstruction"); we
minimise the plain layer-wise ‖Wx − W̃x‖² with x the quantized model's input to the layer.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from .bias_correction import call_order, layer_inputs, weight_pair
from .calibration import check_loader
from .fake_quant import FakeQuantWeight, _along, uniform_record
from .quantizers import from_grid

__all__ = [
    "AdaRoundWeight",
    "adaround",
    "rectified_sigmoid",
    "rounding_regularizer",
    "annealed_beta",
    "optimize_rounding",
    "ZETA",
    "GAMMA",
]

# The stretch of the rectified sigmoid (the paper's §3.3, after Louizos et al.'s hard concrete):
# σ·(ζ − γ) + γ overshoots [0, 1] so that the clip reaches 0 and 1 with finite V.
ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v):
    """Core: h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1), each entry in [0, 1]."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rounding_regularizer(v, beta):
    """Core: f_reg(V) = Σ 1 − |2h(V) − 1|^β: 0 when every h(V) is 0 or 1, one per h(V) = ½."""
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


def annealed_beta(step, iterations, start=20.0, end=2.0, warm_up=0.2):
    """β at `step` of `iterations`: None during the first `warm_up` fraction (reconstruction
    only), then falling linearly from `start` to `end`. A high β leaves h(V) free except near
    0 and 1; a low β pulls every h(V) to 0 or 1."""
    begin = warm_up * iterations
    if step < begin:
        return None
    return end + (start - end) * (1 - (step - begin) / max(iterations - begin, 1))


def optimize_rounding(
    quantizer, weight, forward, inputs, iterations, batch_size, lr, reg_weight, beta, warm_up, generator
):
    """Core: fit quantizer.v by Adam on ‖forward(x, W) − forward(x, W̃)‖² + λ f_reg(V), x drawn
    from `inputs` (N, ...) in batches of `batch_size`; the squared error is summed over output
    channels and averaged over samples (and positions)."""
    optimizer = torch.optim.Adam([quantizer.v], lr=lr)
    channel = -1 if weight.dim() == 2 else 1  # Linear output (N, C), conv output (N, C, ...)
    with torch.no_grad():
        targets = forward(inputs, weight)  # Wx for every calibration sample, once
    for step in range(iterations):
        pick = torch.randint(len(inputs), (batch_size,), generator=generator)
        loss = (forward(inputs[pick], quantizer(weight)) - targets[pick]).pow(2).sum(channel).mean()
        b = annealed_beta(step, iterations, *beta, warm_up)
        if b is not None:
            loss = loss + reg_weight * rounding_regularizer(quantizer.v, b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


class AdaRoundWeight(nn.Module):
    """Parametrization W -> W̃ = s · (clamp(⌊W/s⌋ + h + z, q_min, q_max) − z) on a fixed grid.

    Soft (h = h(V), V trainable) until `harden()`, then hard (h = 1[V ≥ 0], stored as the
    boolean buffer `up`). V starts where h(V) = W/s − ⌊W/s⌋, so the soft W̃ starts at W.

    Args:
        weight: the float weight W it will receive, to start V from.
        scale, zero_point: the grid (0-d or (C,) along `axis`), e.g. `FakeQuantWeight.qparams(W)`.
        bits, qmin, qmax: the integer grid (`qrange`).
        axis: the channel dimension of scale and zero_point, or None.
    """

    def __init__(self, weight, scale, zero_point, bits, qmin, qmax, axis=0):
        super().__init__()
        self.bits, self.qmin, self.qmax, self.axis = bits, qmin, qmax, axis
        self.register_buffer("scale", scale.detach().to(torch.float32).clone())
        self.register_buffer("zero_point", zero_point.detach().to(torch.int32).clone())
        with torch.no_grad():
            grid = weight * (1.0 / self._s(weight))
            rest = grid - torch.floor(grid)  # in [0, 1)
            # h(V) = rest  <=>  σ(V) = (rest − γ) / (ζ − γ)
            self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.hard = False

    def _s(self, weight):
        return _along(self.scale, self.axis, weight).to(weight.dtype)

    def codes(self, weight):
        """The integer grid values clamp(⌊W/s⌋ + h + z, q_min, q_max), floats (soft h: between)."""
        z = _along(self.zero_point, self.axis, weight)
        h = self.up.to(weight.dtype) if self.hard else rectified_sigmoid(self.v)
        return torch.clamp(torch.floor(weight * (1.0 / self._s(weight))) + h + z, self.qmin, self.qmax)

    def forward(self, weight):
        return from_grid(self.codes(weight), self._s(weight), _along(self.zero_point, self.axis, weight))

    def harden(self):
        """Fix every choice at h = 1[V ≥ 0] (round up where h(V) ≥ ½); V is dropped."""
        up = (self.v.detach() >= 0).clone()
        del self.v
        self.register_buffer("up", up)
        self.hard = True
        return self

    def pack(self, weight):
        """The packing protocol, in `FakeQuantWeight`'s "uniform" format (hard rounding only)."""
        if not self.hard:
            raise ValueError("AdaRoundWeight packs once hardened: call harden() first")
        codes = self.codes(weight.detach()).long() - self.qmin
        return uniform_record(
            weight, codes, self.scale, self.zero_point, self.bits, self.qmin, self.axis
        )

    unpack = staticmethod(FakeQuantWeight.unpack)

    def extra_repr(self):
        return f"bits={self.bits}, axis={self.axis}, {'hard' if self.hard else 'soft'}"


def adaround(
    model,
    loader,
    iterations=10_000,
    batch_size=32,
    lr=1e-3,
    reg_weight=0.01,
    beta=(20.0, 2.0),
    warm_up=0.2,
    batches=None,
    seed=0,
):
    """A copy of a fake-quantized `model` whose weights are rounded by AdaRound (Nagel et al.
    2020) on the grids their `FakeQuantWeight` chose.

    Args:
        model: a model whose Linear/Conv weights end in a `FakeQuantWeight` parametrization
            (`quantize_weights`, `quantize_ptq`); activation quantizers stay as they are.
        loader: calibration data, a re-iterable of batches (input, or (input, target)).
        iterations: Adam steps per layer, an int >= 1 (paper: 10,000).
        batch_size: samples per step, an int >= 1 (paper: 32).
        lr: Adam's learning rate, a float > 0 (paper: 10⁻³).
        reg_weight: λ, the weight of the rounding regularizer, a float >= 0 (0.01).
        beta: (start, end) of β's linear annealing, start >= end > 0 (20, 2).
        warm_up: fraction of the iterations without the regularizer, in [0, 1) (0.2).
        batches: use the first `batches` calibration batches (an int >= 1), or all (None).
        seed: seed of the sampling of batches, an int >= 0.

    Returns:
        The rounded copy, in the mode `model` was in; `model` is unchanged.

    Raises:
        TypeError / ValueError: a bad argument, an empty or one-shot loader, no weight under a
            FakeQuantWeight, or NaN/inf in a layer's input on the calibration data.

    Example:
        >>> from minicompress.quantization import quantize_weights
        >>> _ = torch.manual_seed(0); net = torch.nn.Sequential(torch.nn.Linear(8, 4)); x = torch.randn(64, 8)
        >>> nearest = quantize_weights(net, bits=3); ada = adaround(nearest, [x], 1000, lr=1e-2)
        >>> error = lambda m: float((m(x) - net(x)).detach().pow(2).sum())
        >>> error(ada) < error(nearest)
        True
    """
    _checks.check_module(model)
    iterations = _checks.check_int(iterations, "iterations", low=1)
    batch_size = _checks.check_int(batch_size, "batch_size", low=1)
    lr = _checks.check_real(lr, "lr", low=0, low_open=True)
    reg_weight = _checks.check_real(reg_weight, "reg_weight", low=0)
    beta = _check_beta(beta)
    warm_up = _checks.check_fraction(warm_up, "warm_up")
    batches = None if batches is None else _checks.check_int(batches, "batches", low=1)
    seed = _checks.check_int(seed, "seed", low=0)
    check_loader(loader)
    rounded = copy.deepcopy(model)
    layers = {
        name: layer
        for name, layer in rounded.named_modules()
        if parametrize.is_parametrized(layer, "weight")
        and isinstance(layer.parametrizations.weight[-1], FakeQuantWeight)
    }
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no weight under a FakeQuantWeight: nothing to round "
            "(quantize it first with quantize_weights or quantize_ptq)"
        )
    generator = torch.Generator().manual_seed(seed)
    for name in call_order(rounded, layers, loader):
        layer = layers[name]
        inputs = torch.cat(layer_inputs(rounded, layer, loader, batches, name))
        with torch.no_grad():
            weight, _ = weight_pair(layer)
        nearest = layer.parametrizations.weight[-1]
        quantizer = AdaRoundWeight(
            weight, *nearest.qparams(weight), nearest.bits, nearest.qmin, nearest.qmax, nearest.axis
        )
        forward = (lambda x, w: F.linear(x, w)) if isinstance(layer, nn.Linear) else (
            lambda x, w, layer=layer: layer._conv_forward(x, w, None)
        )
        optimize_rounding(
            quantizer, weight, forward, inputs, iterations, batch_size, lr, reg_weight, beta, warm_up,
            generator,
        )  # fmt: skip
        layer.parametrizations.weight[-1] = quantizer.harden()
    return rounded


def _check_beta(beta):
    if not isinstance(beta, (tuple, list)) or len(beta) != 2:
        raise TypeError(f"beta must be a pair (start, end), got {beta!r}")
    start = _checks.check_real(beta[0], "beta[0]", low=0, low_open=True)
    end = _checks.check_real(beta[1], "beta[1]", low=0, low_open=True)
    if start < end:
        raise ValueError(f"beta must fall: start >= end, got {tuple(beta)}")
    return start, end
