"""Tests of minicompress.quantization.float_formats: float16 / bfloat16 round trips."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress.quantization import (
    FLOAT_FORMATS,
    CastWeight,
    round_trip,
    round_trip_error,
)


def spread(seed=0):
    """Values of both signs over many binades, all in float16's normal range."""
    gen = torch.Generator().manual_seed(seed)
    exponent = torch.randint(-13, 15, (5000,), generator=gen).double()
    sign = torch.where(torch.rand(5000, generator=gen) < 0.5, -1.0, 1.0).double()
    return (
        sign
        * (1 + torch.rand(5000, generator=gen, dtype=torch.float64))
        * 2.0**exponent
    )


@pytest.mark.parametrize("format,mantissa", [("float16", 10), ("bfloat16", 7)])
def test_relative_error_is_at_most_the_unit_roundoff_in_the_normal_range(
    format, mantissa
):
    x = spread()
    error = round_trip_error(x, format)
    assert error["unit_roundoff"] == 2.0 ** -(mantissa + 1)
    assert (
        0.5 * error["unit_roundoff"] < error["max_rel_error"] <= error["unit_roundoff"]
    )
    assert error["overflow"] == 0


def test_round_trip_is_torchs_cast_and_keeps_the_dtype():
    x = spread().float()
    for format, (dtype, _, _) in FLOAT_FORMATS.items():
        y = round_trip(x, format)
        assert y.dtype == torch.float32 and torch.equal(y, x.to(dtype).float())


def test_float16_overflows_where_bfloat16_keeps_float32s_range():
    x = torch.tensor(
        [1.0, 65504.0, 65520.0, 1e38]
    )  # 65504 is float16's largest; 65520 rounds up
    assert round_trip_error(x, "float16")["overflow"] == 2
    assert round_trip_error(x, "bfloat16")["overflow"] == 0
    assert torch.isinf(round_trip(x, "float16")[2:]).all()


def test_cast_weight_parametrization_rounds_the_weight():
    layer = nn.Linear(8, 4)
    original = layer.weight.detach().clone()
    parametrize.register_parametrization(layer, "weight", CastWeight("bfloat16"))
    assert torch.equal(
        layer.weight, original.bfloat16().float()
    ) and "bfloat16" in repr(layer)


def test_bad_formats_and_tensors_are_clear_errors():
    with pytest.raises(
        ValueError, match="format must be one of 'float16', 'bfloat16'; got 'fp8'"
    ):
        round_trip(torch.ones(2), "fp8")
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        round_trip(torch.ones(2, dtype=torch.int32), "float16")
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite"):
        round_trip_error(torch.tensor([1.0, float("nan")]), "float16")
    with pytest.raises(ValueError, match="format must be one of"):
        CastWeight("int8")
