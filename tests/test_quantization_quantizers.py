"""Tests of minicompress.quantization.quantizers, pinned to torch's quantization ops."""

import math

import pytest
import torch

from minicompress.quantization import (
    EPS,
    dequantize,
    fake_quantize,
    qparams,
    qrange,
    quantize,
)

# (bits, symmetric, signed, restricted): the schemes every property below is checked on.
SCHEMES = [
    (8, False, False, False),  # torch's quint8 affine
    (8, False, True, False),  # qint8 affine
    (8, True, True, False),  # qint8 symmetric, full range
    (8, True, True, True),  # restricted [-127, 127]
    (4, True, True, False),
    (4, False, False, False),
    (2, True, True, True),
    (3, True, False, False),  # unsigned symmetric, z = 0
    (16, False, False, False),
    (16, True, True, False),
]


def test_integer_grids_by_hand():
    assert qrange(8) == (0, 255)
    assert qrange(8, signed=True) == (-128, 127)
    assert qrange(8, signed=True, restricted=True) == (-127, 127)
    assert qrange(4, signed=True) == (-8, 7)
    assert qrange(1) == (0, 1)
    assert qrange(16, signed=True) == (-32768, 32767)


def test_affine_qparams_worked_by_hand():
    # s = (3 - -1) / 255; z = 0 - round(-1 / s) = round(63.75) = 64
    scale, zero_point = qparams(-1.0, 3.0, bits=8)
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32
    torch.testing.assert_close(scale, torch.tensor(4 / 255))
    assert int(zero_point) == 64
    # signed grid: z = -128 + 64
    assert int(qparams(-1.0, 3.0, bits=8, signed=True)[1]) == -64


def test_symmetric_qparams_worked_by_hand():
    # signed full range divides max|x| by (127 - -128) / 2 = 127.5, as torch.ao does
    scale, zero_point = qparams(-2.0, 1.0, bits=8, symmetric=True, signed=True)
    torch.testing.assert_close(scale, torch.tensor(2 / 127.5))
    assert int(zero_point) == 0
    scale, _ = qparams(-2.0, 1.0, bits=8, symmetric=True, signed=True, restricted=True)
    torch.testing.assert_close(scale, torch.tensor(2 / 127))
    # unsigned symmetric (z = 0) spreads [0, max] over 0..255
    scale, zero_point = qparams(0.0, 5.1, bits=8, symmetric=True)
    torch.testing.assert_close(scale, torch.tensor(5.1 / 255))
    assert int(zero_point) == 0


def test_a_range_without_zero_is_widened_to_contain_it():
    scale, zero_point = qparams(2.0, 5.0, bits=8)  # read as [0, 5]
    torch.testing.assert_close(scale, torch.tensor(5 / 255))
    assert int(zero_point) == 0
    scale, zero_point = qparams(-4.0, -1.0, bits=8)  # read as [-4, 0]
    torch.testing.assert_close(scale, torch.tensor(4 / 255))
    assert int(zero_point) == 255


def test_min_equal_to_max_gets_the_eps_floor_or_a_range_from_zero():
    scale, zero_point = qparams(0.0, 0.0, bits=8)
    assert float(scale) == pytest.approx(EPS) and int(zero_point) == 0
    scale, _ = qparams(3.0, 3.0, bits=8, symmetric=True, signed=True)
    torch.testing.assert_close(scale, torch.tensor(3 / 127.5))


def test_per_channel_qparams_have_one_entry_per_channel():
    scale, zero_point = qparams(
        torch.tensor([-1.0, 0.0, -2.0]), torch.tensor([3.0, 2.0, 0.0]), bits=8
    )
    assert scale.shape == zero_point.shape == (3,)
    assert zero_point.tolist() == [64, 0, 255]


@pytest.mark.parametrize("bits,symmetric,signed,restricted", SCHEMES)
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(
    bits, symmetric, signed, restricted
):
    gen = torch.Generator().manual_seed(bits)
    lo, hi = -0.7, 2.3
    x = lo + (hi - lo) * torch.rand(2000, generator=gen, dtype=torch.float64)
    x = torch.cat([x, torch.tensor([lo, hi, 0.0], dtype=torch.float64)])
    if symmetric and not signed:
        x = x.clamp(min=0)  # an unsigned grid holds no negatives
    scale, zero_point = qparams(
        float(x.min()), float(x.max()), bits, symmetric, signed, restricted
    )
    q = quantize(x, scale, zero_point, bits, signed, restricted)
    error = (dequantize(q, scale, zero_point, dtype=torch.float64) - x).abs()
    # qparams are float32, as torch's: the ends of the range carry float32 rounding too
    assert float(error.max()) <= float(scale) / 2 + 4 * EPS * float(x.abs().max())


@pytest.mark.parametrize("bits,symmetric,signed,restricted", SCHEMES)
def test_fake_quantize_per_tensor_equals_torch_in_value_and_gradient(
    bits, symmetric, signed, restricted
):
    # torch.fake_quantize_per_tensor_affine is the reference kernel (rounding half to even,
    # gradient 1 inside the grid and 0 where clamped); it computes in float32
    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(500, generator=gen)).requires_grad_()
    qmin, qmax = qrange(bits, signed, restricted)
    scale, zero_point = qparams(
        -2.0, 2.5, bits, symmetric, signed, restricted
    )  # x is clipped too
    ours = fake_quantize(x, scale, zero_point, bits, signed, restricted)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    theirs = torch.fake_quantize_per_tensor_affine(
        x, float(scale), int(zero_point), qmin, qmax
    )
    (theirs_grad,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=0)
    assert 0 < float(ours_grad.sum()) < len(x)  # some values were clipped, some passed


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("bits,symmetric,signed,restricted", SCHEMES[:6])
def test_fake_quantize_per_channel_equals_torch_in_float64(
    axis, bits, symmetric, signed, restricted
):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64).requires_grad_()
    dims = [d for d in range(3) if d != axis % 3]
    lo, hi = x.detach().amin(dims), x.detach().amax(dims)
    scale, zero_point = qparams(0.8 * lo, 0.8 * hi, bits, symmetric, signed, restricted)
    qmin, qmax = qrange(bits, signed, restricted)
    ours = fake_quantize(x, scale, zero_point, bits, signed, restricted, axis=axis)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    theirs = torch.fake_quantize_per_channel_affine(
        x, scale, zero_point, axis % 3, qmin, qmax
    )
    (theirs_grad,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantize_gives_torchs_integer_codes():
    # torch.quantize_per_tensor / per_channel hold the codes of torch's int8 kernels
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, generator=gen)
    scale, zero_point = qparams(-1.5, 2.0, bits=8)
    ours = quantize(x, scale, zero_point, bits=8)
    theirs = torch.quantize_per_tensor(
        x, float(scale), int(zero_point), torch.quint8
    ).int_repr()
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)
    scale, zero_point = qparams(-1.0, 1.0, bits=8, symmetric=True, signed=True)
    ours = quantize(x, scale, zero_point, bits=8, signed=True)
    theirs = torch.quantize_per_tensor(x, float(scale), 0, torch.qint8).int_repr()
    assert ours.dtype == torch.int8 and torch.equal(ours, theirs)
    w = torch.randn(3, 6, generator=gen)
    scale, zero_point = qparams(
        w.amin(1), w.amax(1), bits=8, symmetric=True, signed=True
    )
    ours = quantize(w, scale, zero_point, signed=True, axis=0)
    theirs = torch.quantize_per_channel(
        w, scale.double(), zero_point.long(), 0, torch.qint8
    )
    assert torch.equal(ours, theirs.int_repr())
    torch.testing.assert_close(
        dequantize(ours, scale, zero_point, axis=0), theirs.dequantize()
    )


def test_codes_take_the_smallest_integer_dtype():
    x = torch.tensor([0.5])
    assert quantize(x, 0.1, 0, bits=4).dtype == torch.uint8
    assert quantize(x, 0.1, 0, bits=12).dtype == torch.int16
    assert quantize(x, 0.1, 0, bits=16).dtype == torch.int32
    assert quantize(x, 0.1, 0, bits=16, signed=True).dtype == torch.int16


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"bits": 0}, ValueError, r"bits must be an int in \[1, 16\], got 0"),
        ({"bits": 17}, ValueError, r"bits must be an int in \[1, 16\], got 17"),
        ({"bits": 8.0}, TypeError, "bits must be an int"),
        (
            {"bits": 1, "symmetric": True, "signed": True},
            ValueError,
            r"\[2, 16\] for signed symmetric",
        ),
        (
            {"restricted": True, "symmetric": True},
            ValueError,
            "restricted=True needs signed=True",
        ),
        (
            {"restricted": True, "signed": True},
            ValueError,
            "restricted=True needs symmetric=True",
        ),
        ({"symmetric": 1}, TypeError, "symmetric must be True or False"),
        ({"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
    ],
)
def test_qparams_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        qparams(-1.0, 1.0, **kwargs)


def test_qparams_rejects_bad_ranges():
    with pytest.raises(
        ValueError, match="min_val must be <= max_val, got min_val=2 > max_val=1"
    ):
        qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="at channel 1"):
        qparams(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="min_val must be a finite number"):
        qparams(math.nan, 1.0)
    with pytest.raises(ValueError, match="max_val holds 1 NaN or infinite"):
        qparams(torch.tensor([0.0, 0.0]), torch.tensor([1.0, math.inf]))
    with pytest.raises(ValueError, match="same shape"):
        qparams(torch.zeros(2), torch.ones(3))


def test_quantize_rejects_a_missing_axis_and_mismatched_qparams():
    x = torch.randn(2, 3)
    with pytest.raises(
        ValueError, match=r"axis must be an int in \[-2, 1\] or None .* got 2"
    ):
        fake_quantize(x, torch.ones(3), torch.zeros(3, dtype=torch.int32), axis=2)
    with pytest.raises(
        ValueError,
        match=r"scale must have shape \(3,\) per-channel on axis 1, got \(2,\)",
    ):
        quantize(x, torch.ones(2), torch.zeros(2, dtype=torch.int32), axis=1)
    with pytest.raises(ValueError, match=r"scale must have shape \(\) per-tensor"):
        quantize(x, torch.ones(3), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="scale must be > 0"):
        quantize(x, 0.0, 0)
    with pytest.raises(
        ValueError, match=r"zero_point must lie in the grid \[-128, 127\]"
    ):
        quantize(x, 0.1, 200, signed=True)
    with pytest.raises(TypeError, match="q must hold integer codes"):
        dequantize(x, 0.1, 0)
