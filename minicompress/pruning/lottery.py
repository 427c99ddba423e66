"""Lottery tickets: iterative magnitude pruning with rewinding, and the random-reinitialization control.

Frankle, Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks", ICLR 2019, arXiv:1803.03635; Frankle, Dziugaite, Roy, Carbin, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", ICML 2020, arXiv:1912.05671 (rewinding
to an early iteration k, introduced in the preprint arXiv:1903.01611).

    θ_0 ← init;  θ_k ← θ after k steps of the first training run
    repeat for r = 1 .. R:  train θ ⊙ M  →  M ← prune to s_r = 1 − (1 − s)^(r/R) by |θ|  →  θ ← θ_k
    ticket = (θ_k, M);  control = (fresh θ'_0 from the same initializer, M)

The hypothesis: trained in isolation, the ticket matches the dense network's accuracy at
sparsities where the control (same mask, new random weights) falls behind, so what
the pruning found is the mask *together with* the initial weights.

Entry points:
    find_ticket(model, train, sparsity, rounds, rewind_step)  IMP with rewinding, in place
    reinitialize(model, seed)                                  the control: same masks, new weights
"""

import torch
from torch.nn.utils import parametrize

from .. import _checks
from .masks import (
    Mask,
    _own_class,
    apply_mask,
    is_pruned,
    make_permanent,
    prunable_layers,
)
from .unstructured import SCOPES, prune_to_sparsity

__all__ = ["find_ticket", "reinitialize"]


def find_ticket(
    model,
    train,
    sparsity,
    rounds=3,
    rewind_step=0,
    scope="layer",
    exclude=(),
    on_round=None,
):
    """Find a winning ticket by iterative magnitude pruning (IMP) with rewinding.

    Frankle & Carbin, ICLR 2019, arXiv:1803.03635 (rewind to θ_0); Frankle et al., ICML
    2020, arXiv:1912.05671 (rewind to θ_k, which larger networks need).

    Each round trains the masked model with `train`, prunes the alive weights of smallest
    magnitude up to s_r = 1 − (1 − s)^(r/R), and sets every parameter and buffer back to
    its value at step k (masks excepted). The model ends as the ticket: rewound, not trained.

    Args:
        model: a freshly initialized `nn.Module`; it is changed in place.
        train: a callable `train(model, callbacks)` that trains the model in place and
            passes `callbacks` on to `train.fit` (needed to record θ_k when k > 0), e.g.
            `lambda m, cb: fit(m, loader, 2, lr=1e-3, callbacks=cb)`.
        sparsity: final sparsity s, a float in [0, 1).
        rounds: R, an int >= 1; Frankle & Carbin remove 20 % of the survivors per round.
        rewind_step: k, the optimizer step to rewind to, an int >= 0 (0 = initialization).
        scope: "layer" (per-layer rates, as the paper's LeNet and Conv nets) or "global"
            (as its ResNet and VGG).
        exclude: layer names to leave dense.
        on_round: optional callable `on_round(model, round, sparsity)`, called after each
            round's rewinding with the ticket of that sparsity (copy it to keep it).

    Returns:
        The model: masks of sparsity s and weights rewound to θ_k.

    Raises:
        ValueError: bad sparsity, rounds, rewind_step, scope or exclude (model unchanged),
            or a first training run shorter than k steps (model trained once by then).
    """
    sparsity = _checks.check_fraction(sparsity, "sparsity")
    _checks.check_int(rounds, "rounds", low=1)
    _checks.check_int(rewind_step, "rewind_step", low=0)
    _checks.check_choice(scope, "scope", SCOPES)
    _checks.check_callable(train, "train")
    if on_round is not None:
        _checks.check_callable(on_round, "on_round")
    layers = prunable_layers(model, exclude)
    # An all-True mask on every pruned layer first, so the state's keys stay the same
    # through the rounds and θ_k can be written back key by key. If the first training run
    # fails, those masks come off again (the weights are then as the run left them).
    added = [m for m in layers.values() if not is_pruned(m)]
    for module in layers.values():
        apply_mask(module, torch.ones_like(module.weight, dtype=torch.bool))
    recorder = _Rewind(rewind_step)
    if rewind_step == 0:
        recorder.state = _weights(model)
    try:
        return _imp_rounds(
            model, train, sparsity, rounds, recorder, scope, exclude, on_round
        )
    except Exception:  # the masks added above come off again if the first round fails
        for module in added:
            if is_pruned(module) and bool(module.parametrizations.weight[0].mask.all()):
                make_permanent(module)
        raise


def _imp_rounds(model, train, sparsity, rounds, rewind, scope, exclude, on_round):
    """The core of IMP: R rounds of train → prune to s_r by |θ| → rewind to θ_k.

    `rewind` records θ_k during the first training run (or holds θ_0 already).
    """
    for r in range(1, rounds + 1):
        # θ_k is recorded during the first training run.
        train(model, [rewind] if rewind.state is None else [])
        if rewind.state is None:
            raise ValueError(
                f"rewind_step={rewind.step} but the first training run ended before step "
                f"{rewind.step} or did not pass the callbacks on to train.fit"
            )
        # The same share of the survivors goes each round; the smallest |θ| go.
        s_r = 1 - (1 - sparsity) ** (r / rounds)
        prune_to_sparsity(model, s_r, scope=scope, exclude=exclude)
        _load_weights(model, rewind.state)  # θ ← θ_k, the masks stay
        if on_round is not None:
            on_round(model, r, s_r)
    return model


def reinitialize(model, seed=None):
    """Draw fresh weights from each layer's own initializer, keeping every mask.

    The random-reinitialization control of Frankle & Carbin 2019 (Section 2): the same
    sparse architecture with new random weights. Every module with `reset_parameters`
    (Conv, Linear, BatchNorm, ...) is reset in model order; masked weights are reset
    underneath their masks, so pruned entries stay zero.

    Args:
        model: the `nn.Module` to reinitialize in place.
        seed: an int: the initializers draw from a fork of torch's RNG seeded with it, and
            the global random state is the same afterwards; None (default) draws from the
            global RNG as `reset_parameters` does.

    Returns:
        The model.
    """
    _checks.check_module(model)
    if seed is not None:
        _checks.check_int(seed, "seed")
    # torch's initializers draw from the global RNG; with a seed, they draw from a fork of it,
    # so the caller's random state is the same afterwards.
    with torch.random.fork_rng(enabled=seed is not None), torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for module in model.modules():
            if not callable(getattr(module, "reset_parameters", None)):
                continue
            if not parametrize.is_parametrized(module):
                module.reset_parameters()
                continue
            # A parametrized layer's weight is computed, not stored: take the
            # parametrizations off (the stored Parameter comes back as it was), reset, and
            # put the same parametrization modules back, masks included.
            chains = {
                name: list(module.parametrizations[name])
                for name in module.parametrizations
            }
            _own_class(module)
            for name in chains:
                parametrize.remove_parametrizations(
                    module, name, leave_parametrized=False
                )
            module.reset_parameters()
            for name, chain in chains.items():
                for p in chain:
                    parametrize.register_parametrization(module, name, p)
    return model


class _Rewind:
    """Callback that records the weights after `step` optimizer steps (θ_k)."""

    def __init__(self, step):
        self.step = step
        self.state = None

    def after_step(self, model, step):
        if self.state is None and step + 1 == self.step:  # `step` counts from 0
            self.state = _weights(model)


def _weights(model):
    """A copy of every parameter and buffer except the masks (what rewinding restores)."""
    masks = {
        f"{name}.mask" if name else "mask"
        for name, module in model.named_modules()
        if isinstance(module, Mask)
    }
    return {k: v.clone() for k, v in model.state_dict().items() if k not in masks}


def _load_weights(model, state):
    current = model.state_dict()  # tensors that share storage with the model
    with torch.no_grad():
        for key, value in state.items():
            current[key].copy_(value)
