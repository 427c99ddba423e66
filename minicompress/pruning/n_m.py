"""N:M semi-structured sparsity: in every group of M consecutive input weights, keep the N largest.

Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021;
Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
ICLR 2021, arXiv:2102.04010.

    W (C_out, K) with K = C_in·kH·kW, cut into groups g = W[o, jM : (j+1)M]
    M[o, g] = True for the N entries of g with the largest |W|, False for the other M − N

Why hardware wants it: unstructured zeros sit anywhere, so a dense kernel cannot skip them
and a sparse format spends an index per value (see `measure.size_bytes(format="csr")`).
With N:M every group of M has the same number of survivors at known positions, so a
matrix unit can store only the N values plus a few index bits per value and feed the
matching activations to a smaller multiplier array. NVIDIA's Ampere (A100) and later
sparse tensor cores do this for 2:4: half the weights, 2-bit indices, up to twice the
math throughput of the dense instruction (Mishra et al. 2021). The recipe there: train
dense, prune once to 2:4, retrain with the mask fixed.

Entry points:
    n_m_mask(weight, n, m)           the N:M mask of one tensor
    prune_n_m(model, n, m, exclude)  N:M masks on every Conv/Linear weight

The number N is the number KEPT in each group of M (2:4 = 50 % sparsity), as in the
papers; torch.ao's `WeightNormSparsifier` counts `zeros_per_block` instead.
"""

import torch

from .. import _checks
from .masks import apply_mask, get_mask, prunable_layers

__all__ = ["n_m_mask", "prune_n_m"]


def n_m_mask(weight, n=2, m=4):
    """The N:M mask of `weight`: per output row, the n largest |W| of every m consecutive inputs.

    Shapes: weight (C_out, ...) is read as (C_out, K) with K the product of the other
    dimensions (a conv's C_in·kH·kW, in memory order); the mask has weight's shape.

    Args:
        weight: a tensor with at least 2 dimensions.
        n: weights kept per group, an int in [1, m].
        m: group size, an int >= 1.

    Returns:
        A bool tensor, True = keep. Ties keep the earlier position (a stable sort), and a
        last group shorter than m (K not a multiple of m) keeps min(n, its length): the
        layer is then not runnable on 2:4 hardware as is, which needs K % m == 0.

    Example:
        >>> n_m_mask(torch.tensor([[1.0, -4.0, 3.0, 2.0]]), n=2, m=4)
        tensor([[False,  True,  True, False]])
    """
    _check_n_m(n, m)
    _checks.check_tensor(weight, "weight", finite=True)
    if weight.dim() < 2:
        raise ValueError(
            "weight must have at least 2 dimensions (C_out, ...), got shape "
            f"{tuple(weight.shape)}"
        )
    rows = weight.detach().reshape(weight.shape[0], -1)  # (C_out, K)
    k = rows.shape[1]
    pad = (-k) % m
    # Padding with -1 (below any |w|) makes a short last group keep only real entries.
    scores = torch.nn.functional.pad(rows.abs(), (0, pad), value=-1.0)
    groups = scores.view(rows.shape[0], -1, m)  # (C_out, ceil(K / m), m)
    order = torch.argsort(groups, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    keep &= groups >= 0  # a padded slot is never kept
    return keep.view(rows.shape[0], -1)[:, :k].reshape(weight.shape)


def prune_n_m(model, n=2, m=4, exclude=()):
    """Give every Conv/Linear weight an N:M mask (n kept out of every m inputs).

    The mask is computed on the effective weights and combined with any existing mask,
    so each group ends with at most n nonzeros, which the hardware pattern allows.

    Args:
        model: an `nn.Module`.
        n: weights kept per group, an int in [1, m] (2 for 2:4).
        m: group size, an int >= 1 (4 for 2:4).
        exclude: layer names to leave dense (a str or a list of str).

    Returns:
        The model, pruned in place.

    Raises:
        ValueError: n > m, n < 1 or m < 1; no prunable layers; an unknown excluded name.
            The model is unchanged.
    """
    _check_n_m(n, m)
    layers = prunable_layers(model, exclude)
    for name, module in layers.items():
        _checks.check_tensor(module.weight, f"the weight of {name!r}", finite=True)
    masks = {
        name: n_m_mask(module.weight, n, m) & get_mask(module)
        for name, module in layers.items()
    }
    for name, module in layers.items():  # commit only once every mask exists
        apply_mask(module, masks[name])
    return model


def _check_n_m(n, m):
    _checks.check_int(m, "m (the group size)", low=1)
    _checks.check_int(n, "n")
    if not 1 <= n <= m:
        raise ValueError(
            f"n must be an int in [1, m] = [1, {m}] (the weights kept per group), got {n}"
        )
