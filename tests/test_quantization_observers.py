"""Tests of minicompress.quantization.observers against torch.ao's observers and closed forms."""

import math
import warnings

import pytest
import torch

from minicompress.quantization import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
)
from minicompress.quantization.range_search import entropy_range

with (
    warnings.catch_warnings()
):  # torch.ao.quantization is deprecated but still the reference
    warnings.simplefilter("ignore")
    tq = pytest.importorskip("torch.ao.quantization")


def batches(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 5, generator=gen) * (i + 1) + i for i in range(4)]


def laplace(n, seed=0):
    """Laplace(0, 1) samples by the inverse CDF, from a local generator."""
    u = (
        torch.rand(
            n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        - 0.5
    )
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


def heavy_tailed(seed=0):
    """10,000 standard normal values and 20 outliers at ±50 (0.2 %)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(10_000, generator=gen)
    return torch.cat([x, torch.full((10,), 50.0), torch.full((10,), -50.0)])


# (our settings, torch.ao's observer with the same settings)
TORCH_PAIRS = [
    (lambda: MinMaxObserver(), lambda: tq.MinMaxObserver()),
    (lambda: MinMaxObserver(signed=True), lambda: tq.MinMaxObserver(dtype=torch.qint8)),
    (
        lambda: MinMaxObserver(symmetric=True, signed=True),
        lambda: tq.MinMaxObserver(
            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
        ),
    ),
    (
        lambda: MinMaxObserver(axis=1, symmetric=True, signed=True),
        lambda: tq.PerChannelMinMaxObserver(
            ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        ),
    ),
    (
        lambda: MinMaxObserver(axis=2),
        lambda: tq.PerChannelMinMaxObserver(
            ch_axis=2, dtype=torch.quint8, qscheme=torch.per_channel_affine
        ),
    ),
    (lambda: MovingAverageMinMaxObserver(), lambda: tq.MovingAverageMinMaxObserver()),
    (
        lambda: MovingAverageMinMaxObserver(
            averaging_constant=0.3, symmetric=True, signed=True
        ),
        lambda: tq.MovingAverageMinMaxObserver(
            averaging_constant=0.3,
            dtype=torch.qint8,
            qscheme=torch.per_tensor_symmetric,
        ),
    ),
    (
        lambda: MovingAverageMinMaxObserver(axis=0, signed=True),
        lambda: tq.MovingAveragePerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_affine
        ),
    ),
]


@pytest.mark.parametrize("ours,theirs", TORCH_PAIRS)
def test_min_max_observers_give_torchs_qparams(ours, theirs):
    ours, theirs = ours(), theirs()
    for x in batches():
        ours(x)
        theirs(x)
    scale, zero_point = ours.calculate_qparams()
    torch_scale, torch_zero_point = theirs.calculate_qparams()
    torch.testing.assert_close(scale, torch_scale.reshape(scale.shape), rtol=0, atol=0)
    assert torch.equal(
        zero_point.long(), torch_zero_point.reshape(zero_point.shape).long()
    )


def test_observers_start_at_infinities_and_return_their_input_untouched():
    for name, cls in OBSERVERS.items():
        observer = cls()
        assert observer.min_val == math.inf and observer.max_val == -math.inf, name
        x = torch.randn(8, requires_grad=True)
        assert observer(x) is x
        assert observer.min_val.grad_fn is None  # recorded from a detached tensor
        assert f"bits={observer.bits}" in repr(observer)


def test_an_observer_that_saw_no_data_is_a_clear_error():
    for cls in OBSERVERS.values():
        with pytest.raises(ValueError, match=f"{cls.__name__} has observed no data"):
            cls().calculate_qparams()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_input_is_a_clear_error_and_records_nothing(bad):
    for cls in OBSERVERS.values():
        observer = cls()
        observer(torch.tensor([0.0, 1.0]))
        with pytest.raises(
            ValueError, match="observed tensor holds 1 NaN or infinite value"
        ):
            observer(torch.tensor([0.5, bad]))
        assert observer.max_val == 1.0


def test_per_channel_statistics_survive_a_state_dict_round_trip():
    observer = MinMaxObserver(axis=1, symmetric=True, signed=True)
    observer(torch.randn(4, 3))
    fresh = MinMaxObserver(axis=1, symmetric=True, signed=True)
    fresh.load_state_dict(observer.state_dict())
    for a, b in zip(fresh.calculate_qparams(), observer.calculate_qparams()):
        assert torch.equal(a, b)


def test_per_channel_axis_must_exist_in_the_observed_tensor():
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 1\]"):
        MinMaxObserver(axis=3)(torch.randn(2, 3))


def test_percentile_observer_clips_at_the_percentiles_of_the_data():
    x = heavy_tailed()
    observer = PercentileObserver(percentile=99.5)
    for chunk in x[
        torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    ].split(1000):
        observer(chunk)
    lo, hi = observer.range()
    # torch.quantile on all the data is the reference; ours reads a histogram whose bins are
    # max|x| / 2048 wide at the finest
    expected = torch.quantile(x, torch.tensor([0.005, 0.995]))
    width = float(observer.histogram.width)
    assert (
        abs(lo - float(expected[0])) <= 2 * width
        and abs(hi - float(expected[1])) <= 2 * width
    )
    assert 2 < hi < 3.5 and -3.5 < lo < -2  # the 0.2 % of outliers at ±50 are clipped


@pytest.mark.parametrize("bits", [3, 4])
def test_mse_observer_finds_the_closed_form_clipping_of_a_laplace_distribution(bits):
    # Banner et al. 2019 (ACIQ), Laplace(0, b=1), restricted grid with n = 2^(b-1) - 1 steps
    # per side, step α/n: E(α) = 2 e^{-α} (clipped tails) + (α/n)²/12 (1 - e^{-α}) (rounding)
    n = 2 ** (bits - 1) - 1
    a = torch.linspace(0.5, 12, 100_001, dtype=torch.float64)
    closed_form = float(
        a[torch.argmin(2 * torch.exp(-a) + (a / n) ** 2 / 12 * (1 - torch.exp(-a)))]
    )
    observer = MSEObserver(
        bits=bits, symmetric=True, signed=True, restricted=True, steps=200
    )
    observer(laplace(200_000).float())
    lo, hi = observer.range()
    assert max(-lo, hi) == pytest.approx(closed_form, rel=0.03)
    assert max(-lo, hi) < 0.5 * float(observer.max_val)  # far inside the min-max range


def test_entropy_observer_clips_the_outliers_and_keeps_the_bulk():
    x = heavy_tailed()
    observer = EntropyObserver(bits=8, symmetric=True, signed=True)
    observer(x)
    lo, hi = observer.range()
    assert lo == -hi  # a threshold on |x|
    assert (
        float(torch.quantile(x.abs(), 0.99)) < hi < 10
    )  # keeps 99 % of |x|, drops the ±50


def test_entropy_observer_on_one_signed_data_uses_all_levels_of_an_unsigned_grid():
    x = laplace(100_000).abs().float()  # exponential: one-signed, with a long tail
    observer = EntropyObserver(bits=8)  # affine, unsigned: 256 levels over [0, T]
    observer(x)
    lo, hi = observer.range()
    h = observer.histogram
    expected = entropy_range(
        h.absolute(), float(h.width), float(x.min()), float(x.max()), 256
    )
    assert (
        (lo, hi) == expected and lo == float(x.min()) and 5 < hi < 0.9 * float(x.max())
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: PercentileObserver(percentile=50),
            r"percentile must be a finite number in \(50, 100\]",
        ),
        (lambda: PercentileObserver(percentile=100.5), "percentile"),
        (lambda: MSEObserver(steps=0), "steps must be an int >= 1"),
        (lambda: EntropyObserver(bins=1002), "bins must be a multiple of 4"),
        (
            lambda: MovingAverageMinMaxObserver(averaging_constant=0),
            "averaging_constant",
        ),
        (lambda: MinMaxObserver(bits=17), r"bits must be an int in \[1, 16\]"),
    ],
)
def test_observer_settings_are_checked_when_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_observers_are_chosen_by_name():
    assert list(OBSERVERS) == [
        "minmax",
        "moving_average",
        "percentile",
        "mse",
        "entropy",
    ]
    for cls in OBSERVERS.values():
        observer = cls(bits=4, symmetric=True, signed=True)
        observer(heavy_tailed())
        scale, zero_point = observer.calculate_qparams()
        assert float(scale) > 0 and int(zero_point) == 0
