"""Uniform quantizer arithmetic: scale and zero point, quantize, dequantize, fake-quantize.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, arXiv:1712.05877; Krishnamoorthi, "Quantizing deep convolutional networks
for efficient inference: A whitepaper", arXiv:1806.08342, 2018; Nagel et al., "A White Paper on
Neural Network Quantization", arXiv:2106.08295, 2021.

    q  = clamp(round(x / s) + z, q_min, q_max)        quantize (integers)
    x̂  = s · (q − z)                                   dequantize
    fake_quantize(x) = x̂, with d x̂ / d x = 1 inside [q_min, q_max] and 0 outside (clipped STE)

Integer grids (`qrange`): signed [−2^(b−1), 2^(b−1) − 1], unsigned [0, 2^b − 1], restricted
signed [−(2^(b−1) − 1), 2^(b−1) − 1] (symmetric around 0: TensorFlow, TensorRT, oneDNN).
Scale and zero point from a range [min, max] (`qparams`), as torch.ao's observers compute them
(the range is first widened to contain 0, so that real 0 is exactly representable):

    affine:     s = (max − min) / (q_max − q_min),  z = clamp(q_min − round(min / s))
    symmetric:  z = 0,  s = max(|min|, |max|) / ((q_max − q_min) / 2)   signed
                        s = max(|min|, |max|) / (q_max − q_min)         unsigned
    s is floored at eps (torch's float32 epsilon): min == max == 0 gives s = eps, not 0.

Per-channel: `scale` and `zero_point` have one entry per index of dimension `axis` of x.

Entry points: qrange, qparams, quantize, dequantize, fake_quantize. Cores (tensors in and out,
no checks; what a notebook shows): affine_qparams, symmetric_qparams, round_to_grid, from_grid,
fake_quantize_ste.

Note: for unsigned symmetric quantization torch.ao puts the zero point at 128 (the middle of
[0, 255]); we follow Nagel et al. 2021 (unsigned symmetric means z = 0, for one-signed tensors
such as ReLU outputs). Signed symmetric and affine schemes give torch's numbers exactly.
"""

import torch

from .. import _checks

__all__ = [
    "EPS",
    "qrange",
    "qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "affine_qparams",
    "symmetric_qparams",
    "round_to_grid",
    "from_grid",
    "fake_quantize_ste",
]

# The floor on a scale: torch.ao observers' default eps (float32 machine epsilon), so that a
# constant tensor (min == max) still gets a finite, positive scale.
EPS = torch.finfo(torch.float32).eps


def qrange(bits, signed=False, restricted=False):
    """The integer grid (q_min, q_max) of a `bits`-bit quantizer.

    Args:
        bits: an int in [1, 16]; [2, 16] when `restricted` (1 bit has no symmetric signed grid).
        signed: two's-complement codes [−2^(b−1), 2^(b−1) − 1] instead of [0, 2^b − 1].
        restricted: drop the lowest signed code, [−(2^(b−1) − 1), 2^(b−1) − 1]; signed only.

    Example:
        >>> qrange(8), qrange(8, signed=True), qrange(4, signed=True, restricted=True)
        ((0, 255), (-128, 127), (-7, 7))
    """
    signed = _checks.check_bool(signed, "signed")
    restricted = _checks.check_bool(restricted, "restricted")
    bits = _checks.check_int(bits, "bits", low=2 if restricted else 1, high=16)
    if restricted and not signed:
        raise ValueError(
            "restricted=True needs signed=True: it drops the code -2^(bits-1)"
        )
    if not signed:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)) + int(restricted), 2 ** (bits - 1) - 1


def qparams(
    min_val, max_val, bits=8, symmetric=False, signed=False, restricted=False, eps=EPS
):
    """Scale and zero point mapping the range [min_val, max_val] onto a `bits`-bit grid.

    Args:
        min_val, max_val: the range, numbers or tensors of one shape: 0-d (per-tensor) or
            (C,) (per-channel). Finite, min_val <= max_val. A range that does not contain 0 is
            widened to contain it (torch.ao's rule), so that 0 is exactly representable.
        bits: an int in [1, 16] ([2, 16] for signed symmetric: the 1-bit signed grid {−1, 0}
            has no symmetric scale).
        symmetric: z = 0 and a range symmetric around 0 (False: affine, with a zero point).
        signed: signed integer grid (see `qrange`).
        restricted: restricted signed grid [−(2^(b−1) − 1), 2^(b−1) − 1]; needs symmetric
            and signed.
        eps: the floor on the scale, a number > 0.

    Returns:
        (scale, zero_point): float32 and int32 tensors of min_val's shape.

    Raises:
        TypeError / ValueError: a bad argument, non-finite or min_val > max_val.

    Example:
        >>> scale, zero_point = qparams(-1.0, 3.0, bits=8)
        >>> round(float(scale), 6), int(zero_point)   # 4 / 255, 0 - round(-1 / s)
        (0.015686, 64)
    """
    symmetric = _checks.check_bool(symmetric, "symmetric")
    qmin, qmax = qrange(bits, signed, restricted)
    if symmetric and signed and bits < 2:
        raise ValueError(
            f"bits must be an int in [2, 16] for signed symmetric quantization, got {bits}"
        )
    if restricted and not symmetric:
        raise ValueError(
            "restricted=True needs symmetric=True: an affine grid has no centre to keep"
        )
    eps = _checks.check_real(eps, "eps", low=0, low_open=True)
    min_val, max_val = _range_tensors(min_val, max_val)
    if symmetric:
        return symmetric_qparams(min_val, max_val, qmin, qmax, signed, eps)
    return affine_qparams(min_val, max_val, qmin, qmax, eps)


def affine_qparams(min_val, max_val, qmin, qmax, eps=EPS):
    """Core of `qparams`, affine: s = (max − min) / (q_max − q_min), z = q_min − round(min / s)."""
    min_neg = torch.clamp(min_val, max=0.0)  # widen the range to contain 0
    max_pos = torch.clamp(max_val, min=0.0)
    scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=eps)
    zero_point = qmin - torch.round(min_neg / scale)
    zero_point = torch.clamp(
        zero_point, qmin, qmax
    )  # only moves when min_neg / s rounds off-grid
    return scale, zero_point.to(torch.int32)


def symmetric_qparams(min_val, max_val, qmin, qmax, signed, eps=EPS):
    """Core of `qparams`, symmetric: z = 0, s = max|x| / ((q_max − q_min) / 2) (signed grid)
    or max|x| / (q_max − q_min) (unsigned grid, for one-signed tensors)."""
    max_abs = torch.maximum(
        -torch.clamp(min_val, max=0.0), torch.clamp(max_val, min=0.0)
    )
    steps = (
        (qmax - qmin) / 2 if signed else float(qmax - qmin)
    )  # 127.5 for int8, as torch.ao
    scale = torch.clamp(max_abs / steps, min=eps)
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def quantize(x, scale, zero_point, bits=8, signed=False, restricted=False, axis=None):
    """Integers q = clamp(round(x / s) + z, q_min, q_max) of a float tensor.

    Args:
        x: a floating-point tensor.
        scale, zero_point: from `qparams`: 0-d (per-tensor) or of length x.shape[axis].
        bits, signed, restricted: the grid, as in `qrange`.
        axis: the per-channel dimension of x, or None for per-tensor.

    Returns:
        The codes in the smallest integer dtype that holds the grid (uint8, int8, int16 or
        int32); rounding is half to even, as torch's kernels do.

    Example:
        >>> quantize(torch.tensor([-1.0, 0.26, 3.0]), torch.tensor(0.1), torch.tensor(3))
        tensor([ 0,  6, 33], dtype=torch.uint8)
    """
    qmin, qmax = qrange(bits, signed, restricted)
    s, z = _checked_qparams(x, scale, zero_point, qmin, qmax, axis)
    return round_to_grid(x, s, z, qmin, qmax).to(_int_dtype(qmin, qmax))


def dequantize(q, scale, zero_point, axis=None, dtype=torch.float32):
    """Floats x̂ = s · (q − z) of integer codes `q` (as `quantize` returns them).

    Example:
        >>> dequantize(torch.tensor([0, 6, 33]), torch.tensor(0.1), torch.tensor(3))
        tensor([-0.3000,  0.3000,  3.0000])
    """
    _checks.check_tensor(q, "q")
    if q.is_floating_point() or q.is_complex():
        raise TypeError(f"q must hold integer codes, got dtype {q.dtype}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    s, z = _checked_qparams(q, scale, zero_point, None, None, axis)
    return from_grid(q.to(dtype), s.to(dtype), z.to(dtype))


def fake_quantize(
    x, scale, zero_point, bits=8, signed=False, restricted=False, axis=None
):
    """Quantize then dequantize, x̂ = s · (clamp(round(x / s) + z) − z), with the clipped
    straight-through gradient: d x̂ / d x = 1 where x falls inside the grid, 0 where it is
    clipped (Bengio et al., arXiv:1308.3432, 2013). Values and gradients equal
    `torch.fake_quantize_per_tensor_affine` / `torch.fake_quantize_per_channel_affine`.

    Args: as `quantize`. Returns a tensor of x's shape and dtype.

    Example:
        >>> x = torch.tensor([-1.0, 0.26, 3.0], requires_grad=True)
        >>> y = fake_quantize(x, torch.tensor(0.1), torch.tensor(3)); y.sum().backward()
        >>> y.detach(), x.grad   # -1.0 is clipped to -0.3: no gradient there
        (tensor([-0.3000,  0.3000,  3.0000]), tensor([0., 1., 1.]))
    """
    qmin, qmax = qrange(bits, signed, restricted)
    s, z = _checked_qparams(x, scale, zero_point, qmin, qmax, axis)
    return fake_quantize_ste(x, s.to(x.dtype), z.to(x.dtype), qmin, qmax)


def round_to_grid(x, s, z, qmin, qmax):
    """Core of `quantize`: clamp(round(x / s) + z, q_min, q_max), as floats holding integers.

    x / s is computed as x · (1 / s), as torch's kernels do: the two can differ in the last
    bit, which decides a tie such as the channel maximum landing on 127.5 in the full signed
    range. Rounding is half to even (torch.round, like the kernels' nearbyint).
    """
    return torch.clamp(torch.round(x * (1.0 / s)) + z, qmin, qmax)


def from_grid(q, s, z):
    """Core of `dequantize`: s · (q − z)."""
    return (q - z) * s


def fake_quantize_ste(x, s, z, qmin, qmax):
    """Core of `fake_quantize`: the forward value x̂ and the clipped straight-through gradient.

    `s` and `z` broadcast against x (a channel axis reshaped to (1, C, 1, ...), say).
    """
    q = torch.round(x * (1.0 / s)) + z  # the grid before clipping (see round_to_grid)
    inside = (q >= qmin) & (q <= qmax)  # where the gradient passes straight through
    x_hat = from_grid(torch.clamp(q, qmin, qmax), s, z)
    # Forward: x_hat + 0. Backward: round() counts as the identity, clamp() as a 0/1 gate.
    return x_hat.detach() + (x - x.detach()) * inside


# ---------------------------------------------------------------------------------------------


def _range_tensors(min_val, max_val):
    """min_val, max_val as float32 tensors of one shape (0-d or 1-d), finite, min <= max."""
    values = []
    for value, name in ((min_val, "min_val"), (max_val, "max_val")):
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(_checks.check_real(value, name))
        _checks.check_tensor(value, name, dims=(0, 1), finite=True)
        values.append(value.detach().to(torch.float32))
    _checks.check_same_shape(values[0], values[1], "min_val", "max_val")
    if bool((values[0] > values[1]).any()):
        bad = int((values[0] > values[1]).nonzero()[0, 0]) if values[0].dim() else None
        where = "" if bad is None else f" at channel {bad}"
        raise ValueError(
            f"min_val must be <= max_val{where}, got min_val={values[0].flatten()[bad or 0]:.6g} "
            f"> max_val={values[1].flatten()[bad or 0]:.6g}"
        )
    return values[0], values[1]


def _checked_qparams(x, scale, zero_point, qmin, qmax, axis):
    """scale and zero_point checked against x and reshaped to broadcast along `axis`."""
    _checks.check_tensor(x, "x")
    axis = _checks.check_axis(axis, x)
    expected = () if axis is None else (x.shape[axis],)
    shaped = []
    for value, name in ((scale, "scale"), (zero_point, "zero_point")):
        value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
        _checks.check_tensor(value, name, finite=True)
        if tuple(value.shape) != expected and not (axis is None and value.numel() == 1):
            what = (
                "per-tensor (axis=None)"
                if axis is None
                else f"per-channel on axis {axis}"
            )
            raise ValueError(
                f"{name} must have shape {expected} {what}, got {tuple(value.shape)}"
            )
        shaped.append(value.reshape([-1 if d == axis else 1 for d in range(x.dim())]))
    if bool((shaped[0] <= 0).any()):
        raise ValueError("scale must be > 0 everywhere")
    if qmin is not None and bool(((shaped[1] < qmin) | (shaped[1] > qmax)).any()):
        raise ValueError(f"zero_point must lie in the grid [{qmin}, {qmax}]")
    return shaped[0], shaped[1]


def _int_dtype(qmin, qmax):
    """The smallest torch integer dtype holding [qmin, qmax]."""
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise AssertionError("a grid of at most 16 bits always fits int32")
