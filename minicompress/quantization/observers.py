"""Observers: watch a tensor during calibration, then give the scale and zero point it needs.

An observer's forward records statistics of its (detached) input and returns the input
unchanged; `calculate_qparams()` turns the statistics into a range [min, max] and the range
into (scale, zero_point) with `quantizers.qparams`. Statistics are buffers, so they travel
with `state_dict` and `.to()`; min and max start at +inf and −inf, as in torch.ao.

    MinMaxObserver               running min and max (Jacob et al. 2018, arXiv:1712.05877)
    MovingAverageMinMaxObserver  min ← min + c·(min_batch − min), same for max (c = 0.01)
    PercentileObserver           the (100 − p)-th and p-th percentiles (p = 99.99)
    MSEObserver                  the range a·[min, max] of least quantization MSE
    EntropyObserver              the |x| threshold of least KL divergence (TensorRT)

The last three read an exact running histogram (`range_search.Histogram`) and are per-tensor;
the first two are per-tensor (axis=None) or per-channel along `axis`. `OBSERVERS` maps a name
to each class. MinMax and MovingAverage give torch.ao's qparams for the same settings (signed
symmetric or affine grids; see `quantizers` for torch's unsigned symmetric zero point of 128).
"""

import torch
from torch import nn

from .. import _checks
from .quantizers import EPS, qparams, qrange
from .range_search import Histogram, entropy_range, mse_range, percentile_range

__all__ = [
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "EntropyObserver",
    "OBSERVERS",
]


class Observer(nn.Module):
    """The shared part of every observer: the quantizer it serves, min/max buffers, checks.

    Args:
        bits, symmetric, signed, restricted, eps: the quantizer, as in `quantizers.qparams`.
        axis: the per-channel dimension of the observed tensor, or None for per-tensor.

    Subclasses implement `observe(x)` (record a detached, finite batch) and may override
    `range()` (the [min, max] the qparams are computed from; default: the running min and max).
    """

    per_channel = True  # histogram observers set False: one histogram per tensor

    def __init__(
        self,
        bits=8,
        symmetric=False,
        signed=False,
        restricted=False,
        axis=None,
        eps=EPS,
    ):
        super().__init__()
        qparams(
            0.0, 1.0, bits, symmetric, signed, restricted, eps
        )  # checks the quantizer
        if axis is not None and not self.per_channel:
            raise ValueError(
                f"{type(self).__name__} is per-tensor only: axis must be None, got {axis!r}"
            )
        if axis is not None:
            _checks.check_int(axis, "axis")
        self.bits, self.symmetric, self.signed = bits, symmetric, signed
        self.restricted, self.axis, self.eps = restricted, axis, eps
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def forward(self, x):
        _checks.check_tensor(x, "the observed tensor", finite=True)
        if x.numel() == 0:
            raise ValueError(
                f"{type(self).__name__} was given an empty tensor of shape {tuple(x.shape)}"
            )
        with torch.no_grad():  # statistics only: no autograd tape through the observer
            self.observe(x.detach().float())
        return x

    def has_data(self):
        """Whether any batch has been observed."""
        return bool(torch.isfinite(self.min_val).all())

    def range(self):
        return self.min_val, self.max_val

    def calculate_qparams(self):
        """(scale, zero_point) for the data seen so far.

        Raises:
            ValueError: the observer has seen no data.
        """
        if not self.has_data():
            raise ValueError(
                f"{type(self).__name__} has observed no data: run calibration batches through "
                "it before calculate_qparams()"
            )
        lo, hi = self.range()
        return qparams(
            lo, hi, self.bits, self.symmetric, self.signed, self.restricted, self.eps
        )

    def extra_repr(self):
        scheme = "symmetric" if self.symmetric else "affine"
        sign = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {scheme}, {sign}, axis={self.axis}"

    def _batch_min_max(self, x):
        """Per-tensor (0-d) or per-channel ((C,) along axis) min and max of a batch."""
        if self.axis is None:
            return torch.aminmax(x)
        axis = _checks.check_axis(self.axis, x)
        return torch.aminmax(x.transpose(0, axis).reshape(x.shape[axis], -1), dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        _resize_buffers(
            self, state_dict, prefix
        )  # per-channel statistics have length C
        super()._load_from_state_dict(state_dict, prefix, *args)


class MinMaxObserver(Observer):
    """Range = the smallest and largest value seen: min ← min(min, min_batch), same for max.

    Example:
        >>> obs = MinMaxObserver(bits=8); _ = obs(torch.tensor([-1.0, 0.5])); _ = obs(torch.tensor([3.0]))
        >>> scale, zero_point = obs.calculate_qparams()   # s = 4 / 255, z = 0 - round(-1 / s)
        >>> round(float(scale), 6), int(zero_point)
        (0.015686, 64)
    """

    def observe(self, x):
        lo, hi = self._batch_min_max(x)
        self.min_val = torch.minimum(
            self.min_val, lo
        )  # a per-channel batch widens the 0-d start
        self.max_val = torch.maximum(self.max_val, hi)


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of each batch's min and max (torch.ao's rule):
    the first batch sets them, then min ← min + c·(min_batch − min), max likewise.

    Args: as `Observer`, plus averaging_constant c, a number in (0, 1] (torch's default 0.01).
    """

    def __init__(
        self,
        bits=8,
        symmetric=False,
        signed=False,
        restricted=False,
        axis=None,
        eps=EPS,
        averaging_constant=0.01,
    ):
        super().__init__(bits, symmetric, signed, restricted, axis, eps)
        self.averaging_constant = _checks.check_real(
            averaging_constant, "averaging_constant", low=0, high=1, low_open=True
        )

    def observe(self, x):
        lo, hi = self._batch_min_max(x)
        if not self.has_data():
            self.min_val, self.max_val = lo, hi
            return
        c = self.averaging_constant
        self.min_val = self.min_val + c * (lo - self.min_val)
        self.max_val = self.max_val + c * (hi - self.max_val)


class _HistogramObserver(Observer):
    """Per-tensor observers reading a running histogram of every value seen."""

    per_channel = False

    def __init__(
        self,
        bits=8,
        symmetric=False,
        signed=False,
        restricted=False,
        eps=EPS,
        bins=8192,
    ):
        super().__init__(bits, symmetric, signed, restricted, None, eps)
        bins = _checks.check_int(bins, "bins", low=8)
        if bins % 4:
            raise ValueError(f"bins must be a multiple of 4, got {bins}")
        self.histogram = Histogram(bins)

    def observe(self, x):
        lo, hi = torch.aminmax(x)
        self.min_val = torch.minimum(self.min_val, lo)
        self.max_val = torch.maximum(self.max_val, hi)
        self.histogram.add(x)


class PercentileObserver(_HistogramObserver):
    """Range = the (100 − p)-th and p-th percentiles of every value seen (p = 99.99): the
    1 − p/100 most extreme values, shared between the tails, are clipped.

    Args: as `Observer` (per-tensor), plus percentile p, a number in (50, 100], and bins.
    """

    def __init__(
        self,
        bits=8,
        symmetric=False,
        signed=False,
        restricted=False,
        eps=EPS,
        percentile=99.99,
        bins=8192,
    ):
        super().__init__(bits, symmetric, signed, restricted, eps, bins)
        self.percentile = _checks.check_real(
            percentile, "percentile", low=50, high=100, low_open=True
        )

    def range(self):
        h, lo, hi = self.histogram, float(self.min_val), float(self.max_val)
        return percentile_range(
            h.counts, h.edges(), float(h.width), self.percentile, lo, hi
        )


class MSEObserver(_HistogramObserver):
    """Range = a·[min, max] minimizing the quantization MSE over the histogram, a on a grid
    of `steps` values in (0, 1] (Choukroun et al., ICCV Workshops 2019, arXiv:1902.06822)."""

    def __init__(
        self,
        bits=8,
        symmetric=False,
        signed=False,
        restricted=False,
        eps=EPS,
        steps=100,
        bins=8192,
    ):
        super().__init__(bits, symmetric, signed, restricted, eps, bins)
        self.steps = _checks.check_int(steps, "steps", low=1)

    def range(self):
        h, lo, hi = self.histogram, float(self.min_val), float(self.max_val)
        qmin, qmax = qrange(self.bits, self.signed, self.restricted)
        centres = h.edges() + h.width / 2
        grid = (qmin, qmax, self.symmetric, self.signed)
        return mse_range(h.counts, centres, lo, hi, *grid, self.steps)


class EntropyObserver(_HistogramObserver):
    """Range = ±T with T the |x| threshold minimizing KL(P ‖ Q) (Migacz, "8-bit Inference with
    TensorRT", GTC 2017), clipped to [min, max]. Levels over [0, T]: 2^(b−1), or 2^b when all
    values are >= 0 and the grid is unsigned or affine.

    Args: as `Observer` (per-tensor), plus bins.
    """

    def range(self):
        h, lo, hi = self.histogram, float(self.min_val), float(self.max_val)
        one_signed = lo >= 0 and not (self.symmetric and self.signed)
        levels = 2 ** (self.bits - (0 if one_signed else 1))
        return entropy_range(h.absolute(), float(h.width), lo, hi, levels)


def _resize_buffers(module, state_dict, prefix):
    """Give `module`'s own buffers the shapes saved in `state_dict`.

    Per-channel statistics and qparams take their length C from the first batch, so a fresh
    module holds 0-d buffers; torch copies saved values only into buffers of the same shape.
    """
    for name, buffer in module.named_buffers(recurse=False):
        saved = state_dict.get(prefix + name)
        if saved is not None and saved.shape != buffer.shape:
            setattr(module, name, torch.empty_like(saved))


OBSERVERS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "entropy": EntropyObserver,
}
