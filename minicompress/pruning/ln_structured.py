"""Ln-structured masks: zero whole rows (output neurons, filters) of lowest Ln norm.

Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017,
arXiv:1608.08710: score each filter by its L1 norm and drop the weakest. Here the rows are
masked and the layer keeps its shape (the rule of `torch.nn.utils.prune.ln_structured`, whose
masks these match); removing them physically is the job of `minicompress.pruning.structured`.

    prune_ln_structured(model, amount, n, dim, exclude)   whole rows / filters by Ln norm
"""

import math

import torch

from .. import _checks
from .masks import get_mask, prunable_layers
from .unstructured import _commit

__all__ = ["prune_ln_structured"]


def prune_ln_structured(model, amount, n=2, dim=0, exclude=()):
    """Zero whole slices along `dim` (rows of a Linear, filters of a conv) of lowest Ln norm.

    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710 (n = 1).
    For slice j along `dim`, score_j = ‖W[j]‖_n over all other dimensions; among the
    slices not yet entirely masked, the round(amount · n_alive) of lowest score are zeroed
    in every layer. Masks only: the layer keeps its shape.

    Shapes: Linear weight (out, in), conv weight (C_out, C_in, kH, kW); dim=0 zeros output
    neurons / filters, dim=1 input features / channels.

    Args:
        amount: fraction of the alive slices per layer to remove, a float in [0, 1).
        n: the norm's order, a number > 0 or math.inf.
        dim: the dimension whose slices are pruned, an int valid for every pruned weight.
        exclude: layer names to leave dense; the final classifier is a usual choice, since
            zeroing its rows removes classes.

    Returns:
        The model, pruned in place.
    """
    amount = _checks.check_fraction(amount, "amount")
    if n != math.inf:
        _checks.check_real(n, "n (or math.inf)", low=0, low_open=True)
    _checks.check_int(dim, "dim")
    layers = prunable_layers(model, exclude)
    masks = {}
    for name, module in layers.items():
        weight = module.weight.detach()
        _checks.check_tensor(weight, f"the weight of {name!r}", finite=True)
        if not -weight.dim() <= dim < weight.dim():
            raise ValueError(
                f"dim must be in [{-weight.dim()}, {weight.dim() - 1}] for layer {name!r} "
                f"with weight shape {tuple(weight.shape)}, got {dim}"
            )
        masks[name] = _ln_structured_mask(
            weight, get_mask(module), amount, n, dim % weight.dim()
        )
    return _commit(layers, masks, model)


def _ln_structured_mask(weight, old, amount, n, dim):
    other = [d for d in range(weight.dim()) if d != dim]
    alive_rows = old.sum(dim=other) != 0  # slices not already entirely masked
    norms = torch.linalg.vector_norm(weight, ord=n, dim=other)  # (weight.shape[dim],)
    n_alive = int(alive_rows.sum())
    keep = n_alive - round(amount * n_alive)
    kept_rows = torch.zeros_like(alive_rows)
    alive_index = alive_rows.nonzero().flatten()
    kept_rows[alive_index[torch.topk(norms[alive_rows], keep).indices]] = True
    shape = [1] * weight.dim()
    shape[dim] = -1
    return old & kept_rows.view(shape)
