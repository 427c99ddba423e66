"""Fake-quantization modules: a weight parametrization and the activation quantizers.

Fake quantization (Jacob et al., CVPR 2018, arXiv:1712.05877) computes in float with values
that lie on the integer grid, x̂ = s·(clamp(round(x/s) + z) − z), so that a float model shows
the accuracy of its integer twin and can still be trained (straight-through gradient).

    FakeQuantWeight   parametrization W -> Ŵ, qparams from the current W's min and max (per
                      output channel by default), recomputed every forward like TFMOT's
                      LastValueQuantizer; composes with pruning masks; packs itself (int codes
                      + scale + zero point) for `measure.size_bytes(format="packed")`
    ActQuant          an observer during calibration, then x -> x̂ with frozen qparams
    DynamicActQuant   x -> x̂ with qparams from the current batch's min and max (dynamic)
"""

import torch
from torch import nn

from .. import _checks
from .observers import Observer, _resize_buffers
from .packing import pack_bits, unpack_bits
from .quantizers import (
    affine_qparams,
    fake_quantize_ste,
    from_grid,
    qparams,
    qrange,
    round_to_grid,
    symmetric_qparams,
)

__all__ = ["FakeQuantWeight", "ActQuant", "DynamicActQuant", "range_qparams"]


def range_qparams(x, axis, qmin, qmax, symmetric, signed):
    """Core: (scale, zero_point) from the min and max of x itself, per-tensor or along axis."""
    x = x.detach().float()
    if axis is None:
        lo, hi = torch.aminmax(x)
    else:
        lo, hi = torch.aminmax(x.transpose(0, axis).reshape(x.shape[axis], -1), dim=1)
    if symmetric:
        return symmetric_qparams(lo, hi, qmin, qmax, signed)
    return affine_qparams(lo, hi, qmin, qmax)


class FakeQuantWeight(nn.Module):
    """Parametrization W -> Ŵ = s·(clamp(round(W/s) + z) − z), s and z from W's own range.

    Args:
        bits: an int in [1, 16] ([2, 16] signed symmetric).
        symmetric: z = 0 (True, the default for weights) or affine.
        signed: signed integer grid (True for weights).
        restricted: restricted signed grid [−(2^(b−1) − 1), 2^(b−1) − 1].
        axis: the channel dimension of W with one (s, z) each (0: output channels of Conv and
            Linear weights), or None for one pair per tensor.

    Example:
        >>> w = torch.tensor([[0.3, -1.0, 0.5, 1.0]])   # grid {-1, 0, 1}·s with s = max|W| = 1
        >>> FakeQuantWeight(bits=2, restricted=True)(w)   # 0.5 rounds half to even
        tensor([[ 0., -1.,  0.,  1.]])
    """

    def __init__(self, bits=8, symmetric=True, signed=True, restricted=False, axis=0):
        super().__init__()
        qparams(0.0, 1.0, bits, symmetric, signed, restricted)  # checks the quantizer
        if axis is not None:
            _checks.check_int(axis, "axis", low=0)
        self.bits, self.symmetric, self.signed = bits, symmetric, signed
        self.restricted, self.axis = restricted, axis
        self.qmin, self.qmax = qrange(bits, signed, restricted)

    def qparams(self, weight):
        """(scale, zero_point) for this weight: float32 and int32, 0-d or (C,)."""
        return range_qparams(
            weight, self.axis, self.qmin, self.qmax, self.symmetric, self.signed
        )

    def forward(self, weight):
        scale, zero_point = self.qparams(weight)
        s, z = _along(scale, self.axis, weight), _along(zero_point, self.axis, weight)
        return fake_quantize_ste(weight, s, z, self.qmin, self.qmax)

    def pack(self, weight):
        """The packing protocol (see `packing`): a dict with "codes" (the b-bit codes q − q_min,
        `pack_bits`), "scale" (a float, or float32 (C,)), "zero_point" (an int when one
        serves all channels, else int32 (C,)), "bits", "qmin", "axis", "shape", "dtype"."""
        scale, zero_point = self.qparams(weight)
        s, z = _along(scale, self.axis, weight), _along(zero_point, self.axis, weight)
        codes = (
            round_to_grid(weight.detach(), s, z, self.qmin, self.qmax).long()
            - self.qmin
        )
        return uniform_record(weight, codes, scale, zero_point, self.bits, self.qmin, self.axis)

    @staticmethod
    def unpack(packed):
        """The weight `pack` stored: exactly what forward returned."""
        shape, axis = packed["shape"], packed["axis"]
        dtype = getattr(torch, packed["dtype"])
        numel = int(torch.tensor(shape).prod()) if shape else 1
        q = (
            unpack_bits(packed["codes"], packed["bits"], numel) + packed["qmin"]
        ).reshape(shape)
        q = q.to(dtype)
        s = _along(torch.as_tensor(packed["scale"], dtype=torch.float32), axis, q)
        z = _along(torch.as_tensor(packed["zero_point"], dtype=torch.int32), axis, q)
        return from_grid(q, s, z)

    def extra_repr(self):
        scheme = "symmetric" if self.symmetric else "affine"
        return f"bits={self.bits}, {scheme}, {'signed' if self.signed else 'unsigned'}, axis={self.axis}"


def uniform_record(weight, codes, scale, zero_point, bits, qmin, axis):
    """The "uniform" record of the packing protocol: b-bit codes q − q_min of a weight of
    `weight`'s shape and dtype, with the scale and zero point (per tensor, or (C,) along
    `axis`) that `FakeQuantWeight.unpack` maps them back with."""
    # Plain numbers where one value serves every channel (per-tensor, or the zero points of a
    # symmetric grid): a tensor record costs a few hundred bytes of framing on disk.
    per_tensor = axis is None
    one_zero_point = per_tensor or bool((zero_point == zero_point.flatten()[0]).all())
    return {
        "format": "uniform",
        "shape": tuple(weight.shape),
        "dtype": str(weight.dtype).removeprefix("torch."),
        "bits": bits,
        "qmin": qmin,
        "axis": axis,
        "scale": float(scale) if per_tensor else scale.clone(),
        "zero_point": int(zero_point.flatten()[0]) if one_zero_point else zero_point.clone(),
        "codes": pack_bits(codes, bits),
    }


class ActQuant(nn.Module):
    """An activation's quantizer: records with its observer until `freeze`, then fake-quantizes.

    Args:
        observer: an `Observer` (its bits, symmetric, signed, restricted and axis define the grid).
        name: what error messages call this activation (the node it follows, say).

    Buffers `scale` and `zero_point` hold the frozen qparams; `observing` and `quantizing`
    (plain booleans) say what forward does: observe, fake-quantize, or both.
    """

    def __init__(self, observer, name="activation"):
        super().__init__()
        if not isinstance(observer, Observer):
            raise TypeError(
                f"observer must be an Observer, got {type(observer).__name__}"
            )
        self.observer, self.name = observer, name
        self.axis = observer.axis
        self.qmin, self.qmax = qrange(
            observer.bits, observer.signed, observer.restricted
        )
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.observing, self.quantizing = True, False

    def forward(self, x):
        if self.observing:
            try:
                self.observer(x)
            except ValueError as error:
                raise ValueError(f"activation {self.name!r}: {error}") from None
        if self.quantizing:
            s, z = (
                _along(self.scale, self.axis, x),
                _along(self.zero_point, self.axis, x),
            )
            x = fake_quantize_ste(x, s.to(x.dtype), z.to(x.dtype), self.qmin, self.qmax)
        return x

    def calculate_qparams(self):
        """The observer's (scale, zero_point); a clear error naming this activation if it saw nothing."""
        if self.observer is None:
            return self.scale.clone(), self.zero_point.clone()
        try:
            return self.observer.calculate_qparams()
        except ValueError as error:
            raise ValueError(f"activation {self.name!r}: {error}") from None

    def freeze(self, scale, zero_point, keep_observer=False):
        """Fix the qparams, stop observing, start fake-quantizing; drop the observer (its
        statistics, a histogram of thousands of bins say) unless `keep_observer`."""
        self.scale = scale.detach().clone().to(torch.float32)
        self.zero_point = zero_point.detach().clone().to(torch.int32)
        self.observing, self.quantizing = False, True
        if not keep_observer:
            self.observer = None

    def extra_repr(self):
        state = "quantizing" if self.quantizing else "observing"
        return f"name={self.name!r}, {state}, qrange=({self.qmin}, {self.qmax}), axis={self.axis}"

    def _load_from_state_dict(self, state_dict, prefix, *args):
        _resize_buffers(
            self, state_dict, prefix
        )  # per-channel qparams saved with length C
        super()._load_from_state_dict(state_dict, prefix, *args)


class DynamicActQuant(nn.Module):
    """x -> x̂ with (scale, zero_point) from the min and max of the current input, per tensor.

    Dynamic quantization: no calibration, the range follows each batch (PyTorch's
    `quantize_dynamic`; Zafrir et al., "Q8BERT", arXiv:1910.06188, 2019).
    """

    def __init__(self, bits=8, symmetric=False, signed=False, name="activation"):
        super().__init__()
        qparams(0.0, 1.0, bits, symmetric, signed)  # checks the quantizer
        self.bits, self.symmetric, self.signed, self.name = (
            bits,
            symmetric,
            signed,
            name,
        )
        self.qmin, self.qmax = qrange(bits, signed)

    def forward(self, x):
        s, z = range_qparams(x, None, self.qmin, self.qmax, self.symmetric, self.signed)
        return fake_quantize_ste(x, s.to(x.dtype), z.to(x.dtype), self.qmin, self.qmax)

    def extra_repr(self):
        return f"name={self.name!r}, bits={self.bits}, {'symmetric' if self.symmetric else 'affine'}"


def _along(value, axis, like):
    """A 0-d or (C,) qparam shaped to broadcast against `like` along `axis`."""
    if axis is None or value.dim() == 0:
        return value
    return value.reshape([-1 if d == axis else 1 for d in range(like.dim())])
