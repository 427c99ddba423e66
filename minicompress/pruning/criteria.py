"""Channel importance: one score per channel of every prunable group (larger = keep).

    "l1", "l2"   norm of the filters that produce the channel.
                 Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, arXiv:1608.08710.
                 s_c = sum_l ||W_l[c]||_1   (l2: s_c = sqrt(sum_l ||W_l[c]||_2^2))
    "bn_scale"   |gamma| of the BatchNorm on the channel.
                 Liu et al., "Learning Efficient Convolutional Networks through Network
                 Slimming", ICCV 2017, arXiv:1708.06519.          s_c = sum_l |gamma_l[c]|
    "taylor"     first-order estimate of the loss change when the channel is gated off, squared.
                 Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019,
                 arXiv:1906.10771.   s_c = mean over batches of (sum_{w in S_c} g_w w)^2, S_c the
                 BatchNorm gamma_c, beta_c after each producing layer (its W[c], b[c] if none)
    "fpgm"       distance of the filter to the other filters of its layer: filters near the
                 geometric median are the most replaceable.
                 He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural
                 Networks Acceleration", CVPR 2019, arXiv:1811.00250.
                 s_c = sum_l sum_k ||W_l[c] - W_l[k]||_2
    "random"     uniform random scores, the baseline every criterion must beat.

Sums over l run over the coupled layers of the group: a residual group of three convs scores
channel c by all three of its filters. W_l[c] is output row c of layer l's weight, flattened.

Entry point: `channel_scores(model, graph, criterion, batch=None, loss_fn=None, seed=0)`.
"""

import copy

import torch
import torch.nn.functional as F

__all__ = ["CRITERIA", "channel_scores"]

CRITERIA = ("l1", "l2", "bn_scale", "taylor", "fpgm", "random")


def channel_scores(model, graph, criterion, batch=None, loss_fn=None, seed=0):
    """Score every channel of every prunable group of `graph` (built from `model`).

    Args:
        model: the model; not modified (taylor works on a copy).
        graph: `build_dependency_graph(model, example_input)`.
        criterion: one of `CRITERIA`.
        batch: for "taylor" only (an error otherwise): an `(inputs, targets)` pair or a list of
            them; the gradients are taken in eval mode, so BatchNorm uses its running
            statistics and the scores do not depend on how the batch is split.
        loss_fn: for "taylor": `loss_fn(outputs, targets)`, default cross-entropy.
        seed: for "random": the seed of the scores.

    Returns:
        {group index: (group.size,) float tensor of scores} for the prunable groups; for
        "bn_scale", only those with a BatchNorm (the others are left whole, as the YOLO
        pruning repositories leave their BatchNorm-free head convs).

    Raises:
        ValueError: an unknown criterion, "taylor" without a batch, a batch for another
            criterion, "bn_scale" on a model without BatchNorm.
    """
    if criterion not in CRITERIA:
        raise ValueError(
            f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}"
        )
    if criterion == "taylor" and batch is None:
        raise ValueError(
            "criterion 'taylor' needs gradients: pass batch=(inputs, targets)"
        )
    if criterion != "taylor" and (batch is not None or loss_fn is not None):
        raise ValueError(
            f"batch and loss_fn are used by criterion 'taylor' only, not {criterion!r}"
        )
    groups = [g for g in graph.groups if g.prunable]
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return {g.index: torch.rand(g.size, generator=generator) for g in groups}
    modules = dict(model.named_modules())
    if criterion == "taylor":
        return _taylor(model, graph, groups, batch, loss_fn or F.cross_entropy)
    if criterion == "bn_scale":  # only channels that have a BatchNorm have a gamma
        groups = [g for g in groups if g.norms]
        if not groups:
            raise ValueError(
                "criterion 'bn_scale' needs BatchNorm layers; the model has none on a prunable group"
            )
    scores = {}
    for group in groups:
        score = torch.zeros(group.size, dtype=torch.float64)
        if criterion == "bn_scale":
            for name in group.norms:
                gamma = modules[name].weight.detach().abs().double()  # (C,)
                score.index_add_(0, graph.layers[name].out_channel, gamma)
        else:
            for name in group.sources:
                filters = (
                    modules[name].weight.detach().flatten(1).double()
                )  # (C_out, k)
                score.index_add_(
                    0, graph.layers[name].out_channel, _filter_score(filters, criterion)
                )
            if criterion == "l2":
                score = score.sqrt()
        scores[group.index] = score.float()
    return scores


def _filter_score(filters, criterion):
    """Score of each row of `filters` (C_out, k): L1 norm, squared L2 norm, or FPGM distance sum."""
    if criterion == "l1":
        return filters.abs().sum(1)
    if criterion == "l2":
        return filters.pow(2).sum(
            1
        )  # summed over the group's layers, then square-rooted
    return torch.cdist(filters, filters).sum(
        1
    )  # fpgm: (C_out, C_out) distances, summed


def _taylor(model, graph, groups, batch, loss_fn):
    # Molchanov 2019 put a gate z_c = 1 on each channel after its BatchNorm; the loss change
    # when the gate closes is about -dL/dz_c, and for an affine output y = gamma x_hat + beta
    # (or y = W x + b without BatchNorm) dL/dz_c = sum of g w over gamma, beta (or W[c], b[c]).
    # The score is its square (their eq. 8), per batch, averaged; a residual group sums the
    # gates of all its producing layers, which close together.
    work = copy.deepcopy(model)  # gradients and modes stay off the caller's model
    work.eval()
    modules = dict(work.named_modules())
    batches = [batch] if isinstance(batch, tuple) else list(batch)
    if not batches or not all(
        isinstance(b, (tuple, list)) and len(b) == 2 for b in batches
    ):
        raise ValueError(
            "batch must be an (inputs, targets) pair or a non-empty list of such pairs"
        )
    device = next(work.parameters()).device
    scores = {g.index: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    for inputs, targets in batches:
        work.zero_grad(set_to_none=True)
        loss_fn(work(inputs.to(device)), targets.to(device)).backward()
        for group in groups:
            gate = torch.zeros(group.size, dtype=torch.float64)  # dL/dz per channel
            for source in group.sources:
                name = (
                    graph.layers[source].norm or source
                )  # the affine output of the channel
                module, channel = modules[name], graph.layers[name].out_channel
                for param in (module.weight, module.bias):
                    if param is not None and param.grad is not None:
                        gw = (
                            (param.grad * param)
                            .detach()
                            .reshape(len(channel), -1)
                            .sum(1)
                        )
                        gate.index_add_(0, channel, gw.double().cpu())
            scores[group.index] += gate.pow(2)
    return {index: (score / len(batches)).float() for index, score in scores.items()}
