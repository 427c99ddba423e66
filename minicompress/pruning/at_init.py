"""Pruning at initialization: SNIP, GraSP and SynFlow scores, computed before any training.

SNIP: Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", ICLR 2019, arXiv:1810.02340. GraSP: Wang, Zhang, Grosse, "Picking Winning
Tickets Before Training by Preserving Gradient Flow", ICLR 2020, arXiv:2002.07376.
SynFlow: Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by
iteratively conserving synaptic flow", NeurIPS 2020, arXiv:2006.05467.

    SNIP     s = |g ⊙ w|,          g = ∂L/∂w on one batch
    GraSP    s = w ⊙ (H g),        H g = ∂(gᵀ stopgrad(g))/∂w   (double backprop)
    SynFlow  s = |∂R/∂w ⊙ w|,      R = 1ᵀ (Π_l |W_l|) 1: the net with |w| everywhere, fed ones

Every score here is "larger = keep" and pruning removes the lowest scores over all layers
at once (global scope, as in the three papers), through `prune_by_scores`.

Where sources differ: GraSP's paper scores S(−w) = −w ⊙ Hg and removes the *largest* S;
we return −S so that, like every other score in the package, larger means keep (the same
weights are removed). SNIP normalises |g ⊙ w| by its sum, which does not change the
ranking, so we skip it. The GraSP authors' code divides the logits by a temperature of
200 before the loss; `temperature` exposes it with the paper's plain loss (1) as default.

Entry points:
    snip_scores, grasp_scores, synflow_scores    {layer name: score tensor}
    prune_snip, prune_grasp, prune_synflow       score, then prune the model in place
"""

import copy

import torch
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .. import _checks
from .masks import apply_mask, get_mask, prunable_layers
from .unstructured import _drop_lowest, prune_by_scores

__all__ = [
    "snip_scores",
    "grasp_scores",
    "synflow_scores",
    "prune_snip",
    "prune_grasp",
    "prune_synflow",
]


def snip_scores(model, inputs, targets, loss_fn=None):
    """SNIP connection sensitivity |∂L/∂w ⊙ w| of every Conv/Linear weight, from one batch.

    Lee et al., ICLR 2019, arXiv:1810.02340, eq. (6) without the normalising sum.

    Args:
        model: the `nn.Module` at initialization; it is not changed (scores come from a
            copy, in the mode the model is in). Masked weights score 0.
        inputs: one batch, a tensor (B, ...).
        targets: its labels, a tensor (B,) for the default cross-entropy.
        loss_fn: `loss_fn(outputs, targets) -> scalar`, default cross-entropy.

    Returns:
        A dict {layer name: tensor of the weight's shape}.
    """
    plain, variables = _differentiable_copy(model)
    loss = _loss(plain, inputs, targets, loss_fn, temperature=1.0)
    grads = torch.autograd.grad(loss, list(variables.values()))
    weights = _weights(plain)
    return {name: (g * weights[name]).abs() for name, g in zip(variables, grads)}


def grasp_scores(model, inputs, targets, loss_fn=None, temperature=1.0):
    """GraSP keep-scores w ⊙ (H g) (minus the paper's S), by double backpropagation.

    Wang et al., ICLR 2020, arXiv:2002.07376, eq. (8): S(−w) = −w ⊙ Hg measures how much
    removing w would *increase* the gradient norm ‖g‖²; the paper removes the largest S.
    With g = ∂L/∂w over the Conv/Linear weights, Hg = ∂z/∂w for z = gᵀ stopgrad(g).

    Args:
        model, inputs, targets, loss_fn: as in `snip_scores`.
        temperature: logits are divided by it before the loss, a number > 0 (the authors'
            code uses 200).

    Returns:
        A dict {layer name: tensor of the weight's shape}; larger = keep, may be negative.
    """
    _checks.check_real(temperature, "temperature", low=0, low_open=True)
    plain, variables = _differentiable_copy(model)
    loss = _loss(plain, inputs, targets, loss_fn, temperature)
    tensors = list(variables.values())
    grads = torch.autograd.grad(loss, tensors, create_graph=True)
    z = sum((g * g.detach()).sum() for g in grads)  # gᵀ stopgrad(g)
    hessian_grads = torch.autograd.grad(z, tensors)  # H g
    weights = _weights(plain)
    return {name: weights[name] * hg for name, hg in zip(variables, hessian_grads)}


def synflow_scores(model, example_input):
    """SynFlow scores |∂R/∂w ⊙ w| of the linearised net, without data.

    Tanaka et al., NeurIPS 2020, arXiv:2006.05467, Algorithm 1. Every parameter and buffer
    is replaced by its absolute value, so with an all-ones input every ReLU passes its
    input and the net computes R = 1ᵀ(Π_l |W_l|)1; the score of w is the "synaptic flow"
    through it. BatchNorm runs in eval mode, as in the authors' code; the computation is
    in float64 because R is a product over all layers and overflows float32 in deep nets.

    Args:
        model: the `nn.Module`; not changed. Masked weights score 0.
        example_input: a tensor whose shape past the batch dimension is the input's, e.g.
            (1, 1, 28, 28); its values are not used.

    Returns:
        A dict {layer name: tensor of the weight's shape} (float64).
    """
    linear, variables = _linearised_copy(model)
    return _synaptic_flow(linear, variables, example_input)


def prune_snip(model, amount, inputs, targets, loss_fn=None, exclude=()):
    """Prune `amount` of the alive weights with the lowest SNIP scores (global).

    See `snip_scores` for the score and arguments; `amount` in [0, 1) as in
    `prune_unstructured`. Returns the model, pruned in place.
    """
    amount = _checks.check_fraction(amount, "amount")
    names = prunable_layers(model, exclude)
    scores = snip_scores(model, inputs, targets, loss_fn)
    return prune_by_scores(model, {n: scores[n] for n in names}, amount)


def prune_grasp(
    model, amount, inputs, targets, loss_fn=None, temperature=1.0, exclude=()
):
    """Prune `amount` of the alive weights with the lowest GraSP keep-scores (global).

    Equivalently, remove the weights with the largest S(−w) = −w ⊙ Hg of Wang et al.
    See `grasp_scores`. Returns the model, pruned in place.
    """
    amount = _checks.check_fraction(amount, "amount")
    names = prunable_layers(model, exclude)
    scores = grasp_scores(model, inputs, targets, loss_fn, temperature)
    return prune_by_scores(model, {n: scores[n] for n in names}, amount)


def prune_synflow(model, amount, example_input, iterations=100, exclude=()):
    """Prune `amount` of the alive weights by SynFlow, rescoring over `iterations` rounds.

    Tanaka et al., NeurIPS 2020, arXiv:2006.05467, Algorithm 1: one-shot pruning by a
    conserved score empties whole layers at high sparsity (layer collapse); pruning a
    little at a time and rescoring avoids it. Round j of n keeps the fraction
    (1 − amount)^(j/n) of the weights alive at the start (the paper's exponential
    schedule); the last round lands on exactly round(amount · n_alive) removed.

    Args:
        model: the `nn.Module` at initialization; pruned in place once every round is done.
        amount: fraction of the alive weights to remove, a float in [0, 1).
        example_input: as in `synflow_scores`.
        iterations: n, an int >= 1 (the paper uses 100).
        exclude: layer names to leave dense.

    Returns:
        The model, pruned in place.
    """
    amount = _checks.check_fraction(amount, "amount")
    _checks.check_int(iterations, "iterations", low=1)
    names = list(prunable_layers(model, exclude))
    # The rounds mask a linearised copy; the model changes only when all are done.
    masks = _synflow_masks(model, names, amount, example_input, iterations)
    for name, module in prunable_layers(model, exclude).items():
        apply_mask(module, masks[name])
    return model


# ---------------------------------------------------------------------------------------------


def _differentiable_copy(model):
    """A copy of the model and, by layer name, the tensor each weight's gradient is taken for.

    That is the stored `original` of a parametrized (masked) weight, the weight itself
    otherwise. For W = original ⊙ M the gradient is M ⊙ ∂L/∂W: the same on alive entries,
    0 on pruned ones, so pruned weights score 0 and do not count in GraSP's gradient norm.
    The copy keeps the caller's model (BatchNorm statistics, gradients) untouched.
    """
    for name, module in prunable_layers(model).items():  # none: an error here
        _checks.check_tensor(module.weight, f"the weight of {name!r}", finite=True)
    plain = copy.deepcopy(model)
    variables = {}
    for name, module in prunable_layers(plain).items():
        if parametrize.is_parametrized(module, "weight"):
            variables[name] = module.parametrizations.weight.original
        else:
            variables[name] = module.weight
        variables[name].requires_grad_(True)
    return plain, variables


def _weights(model):
    """The weights each layer computes with (W ⊙ M), by name, without gradient history."""
    with torch.no_grad():
        return {name: m.weight.detach() for name, m in prunable_layers(model).items()}


def _linearised_copy(model):
    """SynFlow's linearised net: a float64, eval-mode copy with |x| for every parameter and
    buffer, plus the tensors gradients are taken for (as in `_differentiable_copy`)."""
    linear, variables = _differentiable_copy(model)
    linear.double().eval()
    with torch.no_grad():
        for tensor in list(linear.parameters()) + list(linear.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    return linear, variables


def _synflow_masks(model, names, amount, example_input, iterations):
    """The core of SynFlow pruning: n rounds of rescoring and dropping, on a linearised copy.

    Returns {layer name: bool mask}; round j keeps (1 − amount)^(j/n) of the weights
    alive at the start, the last round exactly round(amount · n_alive) fewer.
    """
    linear, variables = _linearised_copy(model)
    every = prunable_layers(linear)
    layers = {name: every[name] for name in names}
    start = sum(int(get_mask(m).sum()) for m in layers.values())
    final = start - round(amount * start)
    n = iterations
    for j in range(1, n + 1):
        keep = final if j == n else round(start * (1 - amount) ** (j / n))
        # |∂R/∂w ⊙ w| of the weights still alive, rescored every round
        scores = _synaptic_flow(linear, variables, example_input)
        masks = _drop_lowest(
            layers, scores, "global", lambda alive, _: max(0, alive - keep)
        )
        for name, module in layers.items():
            apply_mask(module, masks[name])
    return {name: get_mask(module) for name, module in layers.items()}


def _synaptic_flow(linear, variables, example_input):
    """|∂R/∂w ⊙ w| with R the summed output of the linearised net on an all-ones input."""
    _checks.check_tensor(example_input, "example_input")
    if example_input.dim() < 2:
        raise ValueError(
            f"example_input must be a batch (B, ...) giving the input shape, got shape "
            f"{tuple(example_input.shape)}"
        )
    ones = torch.ones(
        (1, *example_input.shape[1:]), dtype=torch.float64, device=example_input.device
    )
    flow = _checks.forward(linear, ones, "example_input").sum()  # R
    grads = torch.autograd.grad(flow, list(variables.values()))
    weights = _weights(linear)
    return {name: (g * weights[name]).abs() for name, g in zip(variables, grads)}


def _loss(model, inputs, targets, loss_fn, temperature):
    _checks.check_tensor(inputs, "inputs", finite=True)
    _checks.check_tensor(targets, "targets")
    if loss_fn is not None:
        _checks.check_callable(loss_fn, "loss_fn")
    if len(inputs) != len(targets):
        raise ValueError(
            f"inputs and targets must hold the same number of examples, got {len(inputs)} "
            f"and {len(targets)}"
        )
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    return loss_fn(_checks.forward(model, inputs) / temperature, targets)
