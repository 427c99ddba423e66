"""Magnitude and random pruning masks on single weights (unstructured).

Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, arXiv:1506.02626: remove the weights of smallest magnitude, then
retrain the survivors. With scores s (|W| for magnitude pruning, uniform noise for the
random baseline) and k the number of weights to remove,

    τ = k-th smallest s over the weights still alive,   M = M_old ∧ (s > τ)

"global" scope takes one τ over every layer at once (layers with small weights lose more);
"layer" scope takes a τ per layer, so each layer loses the same fraction. Whole rows by their
Ln norm are `ln_structured`'s.

Core: drop_lowest(scores, masks, k), the rule above on tensors; the entry points check their
arguments, compute the scores and commit its masks to the model.

Entry points:
    prune_unstructured(model, amount, method, scope, exclude)   magnitude or random, exact counts
    prune_by_scores(model, scores, amount, scope)               any importance scores, larger = keep
    prune_to_sparsity(model, sparsity, method, scope, exclude)  top up to a sparsity target

`amount` is always the fraction of the weights *still alive* to remove, k = round(amount · n_alive),
the rule of `torch.nn.utils.prune` (whose masks these match), so repeated calls compound:
two calls with 0.5 leave a quarter of the weights.
"""

import torch

from .. import _checks
from .masks import apply_mask, get_mask, prunable_layers

__all__ = [
    "drop_lowest",
    "prune_unstructured",
    "prune_by_scores",
    "prune_to_sparsity",
    "METHODS",
    "SCOPES",
]

METHODS = ("magnitude", "random")
SCOPES = ("global", "layer")


def prune_unstructured(
    model, amount, method="magnitude", scope="global", exclude=(), seed=0
):
    """Zero the `amount` fraction of alive weights with the smallest |W| (or at random).

    Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
    NeurIPS 2015, arXiv:1506.02626. Score s = |W ⊙ M_old| (magnitude) or s ~ U(0, 1)
    (random); drop the k = round(amount · n_alive) alive weights of lowest score, over all
    layers at once ("global") or within each layer ("layer").

    Args:
        model: an `nn.Module`; every Conv and Linear weight is pruned unless excluded.
        amount: fraction of the alive weights to remove, a float in [0, 1).
        method: "magnitude" (L1 of each weight) or "random" (uniform scores drawn from a
            generator seeded with `seed`; the global RNG is left alone).
        scope: "global" (one threshold over all pruned layers) or "layer" (the same
            fraction removed from each layer).
        exclude: layer names to leave dense (a str or a list of str).
        seed: the seed of the "random" method, an int.

    Returns:
        The model, pruned in place (Mask parametrizations on the weights).

    Raises:
        TypeError: amount is not a number.
        ValueError: amount outside [0, 1), unknown method or scope, no prunable layers, an
            excluded name that is not a prunable layer. The model is unchanged.

    Example:
        >>> from minicompress.pruning import prune_unstructured, sparsity
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 10))
        >>> print(sparsity(prune_unstructured(net, 0.3)))
        0.3
    """
    amount = _checks.check_fraction(amount, "amount")
    _checks.check_choice(method, "method", METHODS)
    _checks.check_choice(scope, "scope", SCOPES)
    _checks.check_int(seed, "seed")
    layers = prunable_layers(model, exclude)
    scores = _scores(layers, method, seed)
    masks = _drop_lowest(
        layers, scores, scope, lambda alive, total: round(amount * alive)
    )
    return _commit(layers, masks, model)


def prune_by_scores(model, scores, amount, scope="global"):
    """Zero the `amount` fraction of alive weights with the lowest importance `scores`.

    The mask rule of `prune_unstructured` with the scores passed in: SNIP, GraSP and
    SynFlow (`minicompress.pruning.at_init`) compute scores and prune through here.

    Args:
        model: the model whose layers the scores belong to.
        scores: dict {layer name: tensor of that layer's weight shape}, larger = keep; the
            layers pruned are exactly the keys. Scores are used as given (no absolute
            value), so negative scores are pruned first.
        amount: fraction of the alive weights to remove, a float in [0, 1).
        scope: "global" or "layer", as in `prune_unstructured`.

    Returns:
        The model, pruned in place.
    """
    amount = _checks.check_fraction(amount, "amount")
    _checks.check_choice(scope, "scope", SCOPES)
    layers = _layers_for_scores(model, scores)
    masks = _drop_lowest(
        layers, scores, scope, lambda alive, total: round(amount * alive)
    )
    return _commit(layers, masks, model)


def prune_to_sparsity(
    model, sparsity, method="magnitude", scope="global", exclude=(), scores=None, seed=0
):
    """Prune until a fraction `sparsity` of the weights is masked, counting earlier masks.

    Schedules need a target, not an increment: with N weights of which z are already
    masked, k = round(sparsity · N) − z more are removed (none when z is already at or
    above the target; pruning never un-prunes). With scope "layer" the target holds in
    each layer.

    Args:
        sparsity: target fraction of masked weights, a float in [0, 1).
        method, scope, exclude, seed: as in `prune_unstructured`.
        scores: optional dict {layer name: tensor} overriding `method` and `exclude`, as in
            `prune_by_scores`.

    Returns:
        The model, pruned in place.
    """
    sparsity = _checks.check_fraction(sparsity, "sparsity")
    _checks.check_choice(scope, "scope", SCOPES)
    _checks.check_int(seed, "seed")
    if scores is None:
        _checks.check_choice(method, "method", METHODS)
        layers = prunable_layers(model, exclude)
        scores = _scores(layers, method, seed)
    else:
        layers = _layers_for_scores(model, scores)
    masks = _drop_lowest(
        layers,
        scores,
        scope,
        lambda alive, total: max(0, round(sparsity * total) - (total - alive)),
    )
    return _commit(layers, masks, model)


# ---------------------------------------------------------------------------------------------


def _scores(layers, method, seed=0):
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        return {
            name: torch.rand(m.weight.shape, generator=generator).to(m.weight.device)
            for name, m in layers.items()
        }
    with torch.no_grad():
        weights = {name: m.weight.detach() for name, m in layers.items()}
    for name, weight in weights.items():  # a NaN would decide the mask silently
        _checks.check_tensor(weight, f"the weight of {name!r}", finite=True)
    return {name: weight.abs() for name, weight in weights.items()}


def drop_lowest(scores, masks, k):
    """The core of every mask rule here: M ← M ∧ (s > τ), τ the k-th smallest alive score.

    scores, masks: lists of tensors, one pair per layer of the group that competes (one
    layer for "layer" scope, all of them for "global"); masks are bool, True = alive.
    Returns the new masks. Only alive weights compete, in the order torch.nn.utils.prune
    flattens them, so torch.topk breaks ties as torch does; exactly k are removed.

    Example:
        >>> scores = [torch.tensor([4.0, 1.0, 0.5]), torch.tensor([2.0, 5.0])]
        >>> masks = [torch.tensor([True, True, False]), torch.tensor([True, True])]
        >>> [m.tolist() for m in drop_lowest(scores, masks, 2)]  # 0.5 is already gone
        [[True, False, False], [False, True]]
    """
    _check_drop(scores, masks, k)
    alive = torch.cat([s[m].flatten() for s, m in zip(scores, masks)])  # (n_alive,)
    drop = torch.zeros(alive.numel(), dtype=torch.bool, device=alive.device)
    if k > 0:  # the k lowest alive scores: those at or below τ
        drop[torch.topk(alive, k, largest=False).indices] = True
    new = []
    for mask, chunk in zip(masks, drop.split([int(m.sum()) for m in masks])):
        kept = mask.clone()
        kept[mask] = ~chunk  # row-major order, as the alive scores were taken
        new.append(kept)
    return new


def _check_drop(scores, masks, k):
    if not isinstance(scores, (list, tuple)) or not isinstance(masks, (list, tuple)):
        raise TypeError(
            f"scores and masks must be lists of tensors, got {type(scores).__name__} and "
            f"{type(masks).__name__}"
        )
    if not scores or len(scores) != len(masks):
        raise ValueError(
            f"scores and masks must be non-empty lists of one length, got {len(scores)} "
            f"and {len(masks)}"
        )
    for i, (score, mask) in enumerate(zip(scores, masks)):
        _checks.check_tensor(score, f"scores[{i}]", finite=True)
        _checks.check_tensor(mask, f"masks[{i}]")
        if mask.dtype != torch.bool or mask.shape != score.shape:
            raise ValueError(
                f"masks[{i}] must be a bool tensor of the shape of scores[{i}] "
                f"{tuple(score.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
    alive = sum(int(m.sum()) for m in masks)
    _checks.check_int(k, "k", low=0, high=alive)


def _drop_lowest(layers, scores, scope, count):
    """New masks: in each layer (or over all layers), drop the lowest-scored alive weights.

    count(n_alive, n_total) gives how many to drop (see `drop_lowest`).
    """
    old = {name: get_mask(module) for name, module in layers.items()}
    groups = [[name] for name in layers] if scope == "layer" else [list(layers)]
    new = {}
    for names in groups:
        device = old[names[0]].device
        group_scores = [scores[n].detach().to(device) for n in names]
        alive = sum(int(old[n].sum()) for n in names)
        total = sum(old[n].numel() for n in names)
        masks = drop_lowest(group_scores, [old[n] for n in names], count(alive, total))
        new.update(zip(names, masks))
    return new


def _layers_for_scores(model, scores):
    if not isinstance(scores, dict) or not scores:
        raise TypeError(
            f"scores must be a non-empty dict {{layer name: tensor}}, got {scores!r:.80}"
        )
    layers = prunable_layers(model)
    unknown = [name for name in scores if name not in layers]
    if unknown:
        raise ValueError(
            f"scores name layers {unknown} that are not prunable layers of the model; "
            f"allowed names: {', '.join(layers)}"
        )
    for name, tensor in scores.items():
        shape = layers[name].weight.shape
        _checks.check_tensor(tensor, f"scores[{name!r}]", finite=True)
        if tensor.shape != shape:
            raise ValueError(
                f"scores[{name!r}] must be a tensor of shape {tuple(shape)}, got {tuple(tensor.shape)}"
            )
    return {name: layers[name] for name in scores}


def _commit(layers, masks, model):
    # Every mask is computed before the first one is applied: a failure above leaves the
    # model untouched.
    for name, module in layers.items():
        apply_mask(module, masks[name])
    return model
