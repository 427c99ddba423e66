"""Channel importance: one score per channel of every prunable group (larger = keep).

One core per criterion, tensors in and scores out, each with its paper and formula:

    l1_scores(filters)          s_c = ||W[c]||_1             Li et al., ICLR 2017
    l2_scores(filters)          s_c = ||W[c]||_2             Li et al., ICLR 2017
    bn_scale_scores(scales)     s_c = sum_l |gamma_l[c]|     Liu et al., ICCV 2017
    taylor_scores(gate_grads)   s_c = mean_b (dL/dz_c)^2     Molchanov et al., CVPR 2019
    fpgm_scores(filters)        s_c = sum_k ||W[c] - W[k]||  He et al., CVPR 2019
    random_scores(uniform)      s_c = u_c ~ U(0, 1)          the baseline every criterion must beat

`channel_scores(model, graph, criterion, ...)` is the entry point: it checks its arguments,
reads what the chosen core needs from each prunable channel group and calls it. What a core
reads (`CRITERIA[name] = (input, core)`):

    "filters"         (C, K): row c holds every weight that produces channel c, the rows of all
                      the group's coupled layers side by side (a residual group of three convs
                      scores channel c by its three filters at once, as DepGraph's group
                      importance does, Fang et al., CVPR 2023, arXiv:2301.12900)
    "scales"          (C, L): the scale gamma of each of the L BatchNorms on the group
    "gate_gradients"  (B, C): per batch, the gradient of the loss w.r.t. a gate on channel c
    "uniform"         (C,): draws from a generator seeded with `seed`

A new criterion is one core, one entry in `CRITERIA` and one test.
"""

import torch
import torch.nn.functional as F

from .. import _checks
from .criteria_inputs import CriterionInputs
from .dependency import check_graph

__all__ = [
    "CRITERIA",
    "channel_scores",
    "l1_scores",
    "l2_scores",
    "bn_scale_scores",
    "taylor_scores",
    "fpgm_scores",
    "random_scores",
]


def l1_scores(filters):
    """L1 norm of each channel's filters, s_c = sum_k |W[c, k]|.

    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710: a filter
    of small norm produces weak feature maps, so it goes first.

    Args:
        filters: (C, K) weights, row c the flattened weights that produce channel c.

    Returns:
        (C,) scores.

    Example:
        >>> l1_scores(torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
        tensor([3., 1.])
    """
    return filters.abs().sum(1)


def l2_scores(filters):
    """L2 norm of each channel's filters, s_c = sqrt(sum_k W[c, k]^2).

    Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710 (their
    L1 rule with the Euclidean norm, as `torch.nn.utils.prune.ln_structured(n=2)`). Shapes as
    in `l1_scores`: filters (C, K) in, (C,) scores out.

    Example:
        >>> l2_scores(torch.tensor([[3.0, -4.0], [0.5, 0.5]]))
        tensor([5.0000, 0.7071])
    """
    return filters.pow(2).sum(1).sqrt()


def bn_scale_scores(scales):
    """Magnitude of the BatchNorm scale on each channel, s_c = sum_l |gamma_l[c]|.

    Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV
    2017, arXiv:1708.06519: gamma multiplies the normalized channel, so a channel whose gamma
    sparsity training drove to zero contributes only its constant beta.

    Args:
        scales: (C, L) the gammas of the L BatchNorms on the channels (L = 1 for one layer).

    Returns:
        (C,) scores.

    Example:
        >>> bn_scale_scores(torch.tensor([[0.5], [-2.0], [0.1]]))
        tensor([0.5000, 2.0000, 0.1000])
    """
    return scales.abs().sum(1)


def taylor_scores(gate_gradients):
    """First-order Taylor importance: the squared gradient of the loss w.r.t. a gate on each
    channel, averaged over batches, s_c = mean_b (dL/dz_c)_b^2.

    Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019,
    arXiv:1906.10771, eq. 8. A gate z_c = 1 multiplies channel c after its BatchNorm; closing it
    changes the loss by about -dL/dz_c, and for an affine output y = gamma x_hat + beta (or
    W x + b without BatchNorm) dL/dz_c = sum of g * w over gamma_c, beta_c (or W[c], b[c]).

    Args:
        gate_gradients: (B, C), row b the gate gradients on batch b.

    Returns:
        (C,) scores.

    Example:
        >>> taylor_scores(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        tensor([5., 2.])
    """
    return gate_gradients.pow(2).mean(0)


def fpgm_scores(filters):
    """Summed distance of each filter to the others: filters near the geometric median of
    their layer are the most replaceable, s_c = sum_k ||W[c] - W[k]||_2.

    He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
    Acceleration", CVPR 2019, arXiv:1811.00250: the filter minimizing the summed distance is
    the geometric median, and what it computes the other filters can stand in for. Shapes as
    in `l1_scores`: filters (C, K) in, (C,) scores out.

    Example:
        >>> fpgm_scores(torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
        tensor([15., 10., 15.])
    """
    distances = torch.cdist(filters, filters)  # (C, C), Euclidean
    return distances.sum(1)


def random_scores(uniform):
    """The random baseline: the scores are the draws, s_c = u_c with u_c ~ U(0, 1).

    Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019, arXiv:1810.05270: a
    criterion that does not beat random channels has found nothing. `channel_scores` draws
    `uniform` from a generator seeded with its `seed`.

    Example:
        >>> random_scores(torch.rand(3, generator=torch.Generator().manual_seed(0))).shape
        torch.Size([3])
    """
    return uniform.clone()


# name -> (what the core reads, the core); the order is the one the docs list.
CRITERIA = {
    "l1": ("filters", l1_scores),
    "l2": ("filters", l2_scores),
    "bn_scale": ("scales", bn_scale_scores),
    "taylor": ("gate_gradients", taylor_scores),
    "fpgm": ("filters", fpgm_scores),
    "random": ("uniform", random_scores),
}


def channel_scores(model, graph, criterion, batch=None, loss_fn=None, seed=0):
    """Score every channel of every prunable group of `graph` (built from `model`).

    Args:
        model: the model; not modified ("taylor" works on a copy).
        graph: `build_dependency_graph(model, example_input)`.
        criterion: a name from `CRITERIA`.
        batch: for "taylor" only (an error otherwise): an `(inputs, targets)` pair or a list of
            them; gradients are taken in eval mode, so BatchNorm uses its running statistics
            and the scores do not depend on how the batch is split.
        loss_fn: for "taylor" only: `loss_fn(outputs, targets)`, default cross-entropy.
        seed: for "random": the seed of its generator, an int.

    Returns:
        {group index: (group.size,) float32 scores} for the prunable groups; for "bn_scale",
        only those with a BatchNorm (the others are left whole, as the YOLO pruning
        repositories leave their BatchNorm-free head convs).

    Raises:
        TypeError: a model, graph, batch or loss_fn of the wrong kind.
        ValueError: an unknown criterion, "taylor" without a batch, a batch for another
            criterion, "bn_scale" on a model without BatchNorm, a graph built from another
            model, or weights (or BatchNorm scales) holding NaN or inf, which would decide the
            ranking silently.

    Example:
        >>> net = models.build("lenet5")
        >>> graph = build_dependency_graph(net, torch.zeros(1, 1, 28, 28))
        >>> channel_scores(net, graph, "fpgm")[graph.group_of("conv1").index].shape
        torch.Size([6])
    """
    check_graph(model, graph)
    _checks.check_choice(criterion, "criterion", CRITERIA)
    seed = _checks.check_int(seed, "seed")
    if criterion == "taylor" and batch is None:
        raise ValueError(
            "criterion 'taylor' needs gradients: pass batch=(inputs, targets)"
        )
    if criterion != "taylor" and (batch is not None or loss_fn is not None):
        raise ValueError(
            f"batch and loss_fn are used by criterion 'taylor' only, not {criterion!r}"
        )
    if loss_fn is not None:
        _checks.check_callable(loss_fn, "loss_fn")
    reads, core = CRITERIA[criterion]
    groups = [g for g in graph.groups if g.prunable and (reads != "scales" or g.norms)]
    if not groups:
        raise ValueError(
            f"criterion {criterion!r} needs BatchNorm layers; the model has none on a "
            "prunable group"
            if reads == "scales"
            else "the model has no prunable channel group"
        )
    read = CriterionInputs(model, graph, batch, loss_fn or F.cross_entropy, seed)
    inputs = getattr(read, reads)(groups)  # {group index: tensor}
    return {g.index: core(inputs[g.index]).float() for g in groups}

