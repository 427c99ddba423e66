"""Clipping ranges chosen from a histogram: percentile, minimum quantization MSE, minimum KL.

Wu et al., "Integer Quantization for Deep Learning Inference: Principles and Empirical
Evaluation", arXiv:2004.09602, 2020, compare the three with max calibration. Clipping trades a
large error on a few outliers for a finer step on everything else:

    percentile:  [lo, hi] = the (100 − p)-th and p-th percentiles of x
    MSE:         a* = argmin_a Σ_bins n_i (c_i − Q_a(c_i))²,  range a·[min, max], a ∈ (0, 1]
    entropy:     T* = argmin_T KL(P_T ‖ Q_T) on the histogram of |x| (Migacz, "8-bit Inference
                 with TensorRT", GTC 2017): P_T = bins below T with the outliers added to the
                 last one, Q_T = the same bins merged into `levels` groups and spread back

`Histogram` holds the counts the three read; the cores take tensors and return (lo, hi).
"""

import math

import torch
from torch import nn

from .quantizers import affine_qparams, from_grid, round_to_grid, symmetric_qparams

__all__ = [
    "Histogram",
    "percentile_range",
    "mse_range",
    "entropy_range",
    "kl_divergences",
]


class Histogram(nn.Module):
    """Exact running histogram of x over bins [i·w, (i+1)·w), i in [−bins/2, bins/2).

    The first nonzero batch sets w to the smallest power of two above max|x| / (bins/2). A
    later batch beyond the covered range doubles w, merging neighbour bins pairwise; bins stay
    aligned to multiples of w, so the merge is exact (no counts are redistributed by
    guesswork) and the counts always equal a histogram of all the data taken at the final w.
    Between bins/4 and bins/2 bins cover max|x|.
    """

    def __init__(self, bins=8192):
        super().__init__()
        assert bins % 4 == 0 and bins >= 8, "bins is a multiple of 4, at least 8"
        self.register_buffer("counts", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer(
            "width", torch.tensor(0.0, dtype=torch.float64)
        )  # 0 = not set

    def add(self, x):
        half = self.counts.numel() // 2
        amax = float(x.abs().max())
        if (
            amax > 0 and self.width == 0
        ):  # 2^e > amax / half: every value strictly inside
            self.width.fill_(2.0 ** (math.floor(math.log2(amax / half)) + 1))
        while (
            0 < half * float(self.width) <= amax
        ):  # widen: merge pairs of bins, double w
            merged = self.counts.view(-1, 2).sum(1)  # bin pair (2k, 2k+1) -> k - bins/4
            self.counts.zero_()
            self.counts[half // 2 : half // 2 + half] = merged
            self.width.mul_(2)
        if self.width == 0:  # all zeros so far: 0 lies in bin 0 whatever w becomes
            index = torch.zeros(x.numel(), dtype=torch.long)
        else:
            index = torch.floor(x.flatten().double() / self.width).long()
        self.counts += torch.bincount(index + half, minlength=2 * half).double()

    def edges(self):
        """The bins' left edges, (bins,)."""
        half = self.counts.numel() // 2
        return torch.arange(-half, half, dtype=torch.float64) * self.width

    def absolute(self):
        """Counts of |x| in bins [j·w, (j+1)·w), j in [0, bins/2): bin −j−1 folds onto bin j."""
        half = self.counts.numel() // 2
        return self.counts[half:] + self.counts[:half].flip(0)


def percentile_range(counts, edges, width, percentile, min_val, max_val):
    """[lo, hi] = the (100 − p)-th and p-th percentiles, linear inside a bin, within [min, max].

    counts, edges: (bins,) histogram counts and left edges; width: the bin width.
    """
    cumulative = torch.cumsum(counts, 0)  # count at each bin's right edge
    total = cumulative[-1]
    bounds = []
    for fraction in (1 - percentile / 100, percentile / 100):
        target = fraction * total
        k = int(torch.searchsorted(cumulative, target).clamp(max=len(counts) - 1))
        below = cumulative[k] - counts[k]  # count left of bin k
        inside = (target - below) / counts[k] if counts[k] > 0 else 0.0
        bounds.append(float(edges[k] + width * inside))
    return max(bounds[0], min_val), min(bounds[1], max_val)


def mse_range(
    counts, centres, min_val, max_val, qmin, qmax, symmetric, signed, steps=100
):
    """The range a·[min, max] minimizing Σ n_i (c_i − Q(c_i))² over a = 1/steps, ..., 1.

    Bin centres c_i stand for the values in their bins, weighted by the counts n_i.
    """
    a = torch.arange(1, steps + 1, dtype=torch.float64) / steps  # (steps,)
    lo, hi = a * min_val, a * max_val
    if symmetric:
        s, z = symmetric_qparams(lo, hi, qmin, qmax, signed)
    else:
        s, z = affine_qparams(lo, hi, qmin, qmax)
    s, z = (
        s[:, None].double(),
        z[:, None].double(),
    )  # (steps, 1) against the bins (1, n)
    used = counts > 0  # empty bins add no error
    c, n = centres[used][None, :], counts[used]
    x_hat = from_grid(round_to_grid(c, s, z, qmin, qmax), s, z)
    errors = ((c - x_hat) ** 2 * n).sum(1)  # (steps,)
    best = int(torch.argmin(errors))
    return float(lo[best]), float(hi[best])


def entropy_range(abs_counts, width, min_val, max_val, levels):
    """TensorRT's KL calibration: the threshold T = i·w (i >= levels bins kept) minimizing
    KL(P ‖ Q) on the histogram of |x|; ties go to the larger T. Returns [max(min, −T), min(max, T)].

    abs_counts: (bins,) counts of |x|; levels: quantization levels over [0, T] (2^(b−1) for
    signed data, 2^b for one-signed data on an unsigned grid).
    """
    bins = len(abs_counts)
    candidates = torch.arange(min(levels, bins), bins + 1)
    kl = kl_divergences(abs_counts, candidates, levels)
    ties = (
        kl <= kl.min() * (1 + 1e-12) + 1e-15
    )  # rounding must not decide between equals
    best = int(candidates[ties].max())
    threshold = best * width
    return max(min_val, -threshold), min(max_val, threshold)


def kl_divergences(c, i, levels):
    """KL(P_i ‖ Q_i) of Migacz's steps for each number of kept bins in i, (I,).

    Steps for one i (counts c_j of |x|, N = Σ c_j): P_j = c_j for j < i, with the outliers
    O = Σ_{j >= i} c_j added to P_{i−1}; merge bins j < i into `levels` groups g = ⌊j·levels/i⌋;
    Q_j = T_g / U_g on the U_g nonempty bins of group g (T_g their count), 0 on empty ones.
    Normalized, KL = Σ_j p_j log(p_j / q_j). Every sum over bins is a difference of
    cumulative sums, so each i costs O(levels), not O(bins).
    """
    i = i[:, None]  # (I, 1)
    total, used, clogc = (
        torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.cumsum(v, 0)]
        )  # Σ_{j<k} at k
        for v in (c, (c > 0).double(), torch.xlogy(c, c))
    )
    n, kept = total[-1], total[i]  # N and Σ_{j<i} c_j, (I, 1)
    last = c[i - 1] + (n - kept)  # P_{i-1}: the last kept bin with the outliers
    edges = (
        torch.arange(levels + 1) * i + levels - 1
    ) // levels  # group g: [edge_g, edge_g+1)
    t = total[edges[:, 1:]] - total[edges[:, :-1]]  # (I, levels) T_g
    u = used[edges[:, 1:]] - used[edges[:, :-1]]  # (I, levels) U_g
    log_q = torch.log(
        t / (u.clamp(min=1) * kept)
    )  # log q_j for the nonempty bins of group g
    p_log_p = clogc[i - 1] + torch.xlogy(last, last)  # Σ P log P
    p_log_q = torch.where(t > 0, t * log_q, 0.0).sum(1, keepdim=True)
    outliers = n - kept
    p_log_q = p_log_q + torch.where(
        outliers > 0, outliers * log_q[:, -1:], 0.0
    )  # in the last group
    kl = (p_log_p - p_log_q) / n - torch.log(n)
    empty_last = (c[i - 1] == 0) & (
        outliers > 0
    )  # P > 0 where Q = 0: infinite divergence
    return torch.where(empty_last, float("inf"), kl)[:, 0]
