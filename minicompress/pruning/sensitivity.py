"""Per-layer sensitivity scan: accuracy against sparsity with one layer pruned at a time.

Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, arXiv:1506.02626, Figure 6; Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017, arXiv:1608.08710, Figure 2. For each layer l and each
amount a, prune only layer l by magnitude and measure

    acc(l, a) = evaluate(model with layer l pruned by a, every other layer as it was)

A flat curve means the layer tolerates pruning (give it a high sparsity); a steep one
means it does not (conv1, the output layer). The scan chooses per-layer sparsities for a
hand-tuned "layer" budget, where one global threshold would treat layers alike.

Entry point:
    sensitivity_scan(model, evaluate, amounts)  -> {layer name: [accuracy per amount]}
"""

import copy

from .. import _checks
from ..train import progress_bar
from .masks import _write_mask, get_mask, prunable_layers
from .unstructured import METHODS, _drop_lowest, _scores

__all__ = ["sensitivity_scan"]


def sensitivity_scan(
    model, evaluate, amounts, method="magnitude", exclude=(), progress=True, seed=0
):
    """Accuracy of the model with each layer alone pruned by each amount.

    Args:
        model: the trained `nn.Module`; it is left unchanged (the scan prunes a copy).
        evaluate: a callable `evaluate(model) -> float`, e.g.
            `lambda m: train.evaluate(m, test_loader)`.
        amounts: fractions of each layer's alive weights to remove, each in [0, 1).
        method: "magnitude" or "random", as in `prune_unstructured`.
        exclude: layer names not to scan.
        progress: show a bar over the len(layers) · len(amounts) evaluations (drawn by
            `train.progress_bar`).
        seed: the seed of the "random" method.

    Returns:
        A dict {layer name: [evaluate(...) for each amount]} in model order.

    Raises:
        ValueError: an amount outside [0, 1), no amounts, an unknown method, no prunable
            layers, an unknown excluded name.
    """
    if isinstance(amounts, (str, bytes)) or not hasattr(amounts, "__iter__"):
        raise TypeError(
            f"amounts must be a list of fractions in [0, 1), got {amounts!r}"
        )
    amounts = list(amounts)
    if not amounts:
        raise ValueError("amounts is empty; give fractions in [0, 1), e.g. (0.5, 0.9)")
    amounts = [_checks.check_fraction(a, "each of amounts") for a in amounts]
    _checks.check_callable(evaluate, "evaluate")
    _checks.check_choice(method, "method", METHODS)
    _checks.check_bool(progress, "progress")
    _checks.check_int(seed, "seed")
    names = list(prunable_layers(model, exclude))
    work = copy.deepcopy(model)  # the caller's model is never touched
    layers = prunable_layers(work)
    results = {}
    bar = progress_bar(len(names) * len(amounts), progress, desc="sensitivity")
    for name in names:
        module = layers[name]
        base = get_mask(module)
        scores = _scores({name: module}, method, seed)
        # Every mask is computed from the layer's own starting mask before any is written.
        masks = [
            _drop_lowest(
                {name: module}, scores, "layer", lambda alive, _, a=a: round(a * alive)
            )[name]
            for a in amounts
        ]
        results[name] = []
        for mask in masks:
            _write_mask(module, mask)  # replaces the previous amount's mask
            results[name].append(evaluate(work))
            bar.update()
        _write_mask(
            module, base
        )  # this layer back as it was before the next one is scanned
    bar.close()
    return results
