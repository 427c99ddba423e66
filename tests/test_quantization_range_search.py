"""Tests of minicompress.quantization.range_search: the histogram and the three range searches."""

import math

import pytest
import torch

from minicompress.quantization.range_search import (
    Histogram,
    entropy_range,
    kl_divergences,
    mse_range,
    percentile_range,
)


def migacz_kl(counts, levels):
    """KL(P_i ‖ Q_i) for i = levels..bins, step by step as in Migacz's GTC 2017 pseudo-code
    (plain Python loops: the reference the vectorized core is checked against)."""
    counts = [float(c) for c in counts]
    out = []
    for i in range(levels, len(counts) + 1):
        p = counts[:i]
        p[-1] += sum(counts[i:])  # outliers onto the last kept bin
        q = [0.0] * i
        for g in range(
            levels
        ):  # merge bins into levels, expand back over the nonempty bins
            members = [j for j in range(i) if j * levels // i == g]
            nonempty = [j for j in members if counts[j] > 0]
            for j in nonempty:
                q[j] = sum(counts[j] for j in members) / len(nonempty)
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q):
            if a > 0:
                kl = math.inf if b == 0 else kl + a / sp * math.log((a / sp) / (b / sq))
        out.append(kl)
    return out


def test_histogram_widening_merges_bins_exactly():
    gen = torch.Generator().manual_seed(0)
    first, second = torch.randn(500, generator=gen), 7 * torch.randn(500, generator=gen)
    histogram = Histogram(bins=64)
    histogram.add(torch.zeros(3))  # zeros before any width is known land in bin 0
    histogram.add(first)
    histogram.add(second)
    everything = torch.cat([torch.zeros(3), first, second]).double()
    w = float(histogram.width)
    assert w >= float(everything.abs().max()) / 32  # covers every value
    direct = torch.bincount(
        torch.floor(everything / w).long() + 32, minlength=64
    ).double()
    assert torch.equal(histogram.counts, direct)
    assert (
        float(histogram.counts.sum()) == 1003
        and float(histogram.absolute().sum()) == 1003
    )


def test_histogram_of_absolute_values_folds_negative_bins():
    histogram = Histogram(bins=8)
    histogram.add(
        torch.tensor([-3.0, -0.5, 0.5, 3.9])
    )  # w = 1 (2^0 > 3.9 / 4), bins -4..3
    assert float(histogram.width) == 1.0
    assert histogram.counts.tolist() == [0, 1, 0, 1, 1, 0, 0, 1]
    assert histogram.absolute().tolist() == [
        2,
        0,
        1,
        1,
    ]  # bin -3 = [-3, -2) folds onto [2, 3)


def test_entropy_divergences_match_migaczs_steps():
    gen = torch.Generator().manual_seed(3)
    for levels in (2, 3, 4, 8):
        counts = torch.randint(0, 5, (40,), generator=gen).double() * (
            torch.rand(40, generator=gen) > 0.3
        )
        expected = torch.tensor(migacz_kl(counts, levels), dtype=torch.float64)
        ours = kl_divergences(counts, torch.arange(levels, 41), levels)
        assert torch.equal(torch.isinf(ours), torch.isinf(expected))
        finite = torch.isfinite(expected)
        torch.testing.assert_close(
            ours[finite], expected[finite], rtol=1e-9, atol=1e-12
        )


def test_entropy_threshold_of_a_small_histogram_worked_out():
    counts = torch.tensor(
        [40.0, 30, 0, 12, 8, 3, 0, 2, 0, 1, 0, 0, 1], dtype=torch.float64
    )
    # i = 6 bins gives the least KL with 2 or 3 levels; with 4 levels i = 10 does
    # (i with an empty last bin and outliers beyond it is infinitely far from Q)
    assert entropy_range(counts, 1.0, 0.0, 13.0, 2) == (0.0, 6.0)
    assert entropy_range(counts, 1.0, 0.0, 13.0, 3) == (0.0, 6.0)
    assert entropy_range(counts, 0.5, -6.5, 6.5, 4) == (-5.0, 5.0)


def test_percentile_interpolates_inside_a_bin():
    counts = torch.tensor([0.0, 10, 10, 0])  # 10 values in [-1, 0), 10 in [0, 1), w = 1
    edges = torch.tensor([-2.0, -1, 0, 1])
    assert percentile_range(counts, edges, 1.0, 90.0, -1.0, 1.0) == pytest.approx(
        (-0.8, 0.8)
    )
    assert percentile_range(counts, edges, 1.0, 100.0, -0.9, 0.95) == (-0.9, 0.95)


def test_mse_range_prefers_clipping_a_lone_outlier():
    centres = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 10.0], dtype=torch.float64)
    counts = torch.tensor([100.0, 100, 100, 100, 100, 1], dtype=torch.float64)
    # grid {-s, 0, s}: s = 10 zeros the 500 small values (error 250), s = 0.8 costs them
    # 26 and the clipped outlier (10 - 0.8)² = 84.6
    lo, hi = mse_range(counts, centres, -1.0, 10.0, -1, 1, True, True, steps=100)
    assert (lo, hi) == pytest.approx((-0.08, 0.8))
    lo, hi = mse_range(
        counts, centres, -1.0, 10.0, 0, 2**16 - 1, False, False, steps=100
    )
    assert (lo, hi) == (-1.0, 10.0)  # 16 bits: nothing is worth clipping
