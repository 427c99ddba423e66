"""When to prune during training: iterative prune / fine-tune rounds and gradual magnitude pruning.

Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, arXiv:1506.02626, Section 3.3: prune, retrain, and repeat; the
iterative version reaches a higher sparsity than one shot at the same accuracy. Round r of
R targets the sparsity

    s_r = 1 − (1 − s)^(r / R)          (the same fraction of the survivors in every round)

Zhu, Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR 2018 Workshop, arXiv:1710.01878, eq. (1): raise the sparsity from s_i
to s_f over n updates Δt steps apart, starting at step t_0, while training goes on:

    s_t = s_f + (s_i − s_f) · (1 − (t − t_0) / (n Δt))³,   t ∈ {t_0, t_0 + Δt, ..., t_0 + n Δt}

The cube prunes fast while many redundant weights remain and slowly near the end.

Entry points:
    prune_iteratively(model, sparsity, rounds, fine_tune)   Han et al.'s prune / retrain loop
    polynomial_sparsity(step, final_sparsity, ...)          the Zhu & Gupta schedule s_t
    GradualPruning(final_sparsity, begin_step, ...)         a `train.fit` callback applying it
"""

from .. import _checks
from .masks import prunable_layers
from .unstructured import METHODS, SCOPES, prune_to_sparsity

__all__ = ["prune_iteratively", "polynomial_sparsity", "GradualPruning"]


def prune_iteratively(
    model,
    sparsity,
    rounds,
    fine_tune,
    method="magnitude",
    scope="global",
    exclude=(),
    seed=0,
):
    """Prune to `sparsity` in `rounds` steps, calling `fine_tune(model)` after each.

    Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
    NeurIPS 2015, arXiv:1506.02626. Round r of R prunes to s_r = 1 − (1 − s)^(r/R) of the
    weights (`prune_to_sparsity`), then retrains the survivors.

    Args:
        model: an `nn.Module`.
        sparsity: final fraction of pruned weights s, a float in [0, 1).
        rounds: number of prune / fine-tune rounds R, an int >= 1 (1 = one shot).
        fine_tune: a callable `fine_tune(model)` that trains the model in place, e.g.
            `lambda m: train.fit(m, loader, 1, lr=1e-3)`.
        method, scope, exclude, seed: as in `prune_unstructured`.

    Returns:
        The model, pruned and fine-tuned in place.

    Note:
        Han et al. set each layer's threshold to a quality parameter times the standard
        deviation of its weights; here the sparsity is the target, which makes methods
        comparable at equal sparsity.
    """
    sparsity = _checks.check_fraction(sparsity, "sparsity")
    _checks.check_int(rounds, "rounds", low=1)
    _checks.check_callable(fine_tune, "fine_tune")
    _checks.check_int(seed, "seed")
    _checks.check_choice(method, "method", METHODS)
    _checks.check_choice(scope, "scope", SCOPES)
    prunable_layers(model, exclude)  # a bad name fails here, before anything changes
    for r in range(1, rounds + 1):
        target = 1 - (1 - sparsity) ** (r / rounds)
        prune_to_sparsity(
            model, target, method=method, scope=scope, exclude=exclude, seed=seed
        )
        fine_tune(model)
    return model


def polynomial_sparsity(
    step, final_sparsity, begin_step, n_updates, frequency, initial_sparsity=0.0
):
    """Zhu & Gupta's target sparsity at optimizer step `step`.

    Zhu, Gupta, "To prune, or not to prune", ICLR 2018 Workshop, arXiv:1710.01878, eq. (1):
    s_t = s_f + (s_i − s_f)(1 − (t − t_0)/(n Δt))³ for t_0 <= t <= t_0 + n Δt; s_i before,
    s_f after.

    Args:
        step: the step t, an int >= 0.
        final_sparsity: s_f, a float in [0, 1).
        begin_step: t_0, the step of the first update, an int >= 0.
        n_updates: n, the number of updates after the first, an int >= 1.
        frequency: Δt, steps between updates, an int >= 1.
        initial_sparsity: s_i, a float in [0, s_f].

    Returns:
        A float: the sparsity the schedule asks for at `step`.

    Example:
        >>> polynomial_sparsity(15, 0.9, begin_step=10, n_updates=4, frequency=5)
        0.5203125
    """
    final, initial = _check_schedule(
        final_sparsity, initial_sparsity, begin_step, n_updates, frequency
    )
    _checks.check_int(step, "step", low=0)
    span = n_updates * frequency
    progress = min(max(step - begin_step, 0), span) / span
    return final + (initial - final) * (1 - progress) ** 3


class GradualPruning:
    """A `train.fit` callback that prunes by magnitude on Zhu & Gupta's cubic schedule.

    At steps t_0, t_0 + Δt, ..., t_0 + nΔt (after the optimizer step) it prunes the model to
    `polynomial_sparsity(t, ...)` with `prune_to_sparsity`, so at t_0 + nΔt the sparsity is
    exactly round(s_f · N) / N, N the number of pruned weights. Masks are parametrizations,
    so the weights pruned at one update stay at zero while training continues.

    Args:
        final_sparsity, begin_step, n_updates, frequency, initial_sparsity: the schedule,
            as in `polynomial_sparsity` (s_f, t_0, n, Δt, s_i).
        method, scope, exclude, seed: as in `prune_unstructured`; `exclude` is checked to
            be names here, and against the model at the first update, before any change.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> schedule = GradualPruning(0.5, begin_step=0, n_updates=2, frequency=1)
        >>> batches = [(torch.ones(2, 4), torch.zeros(2).long())] * 3  # steps 0, 1, 2
        >>> _ = train.fit(net, batches, 1, progress=False, callbacks=[schedule])
        >>> print(sparsity(net))
        0.5
    """

    def __init__(
        self,
        final_sparsity,
        begin_step,
        n_updates,
        frequency,
        initial_sparsity=0.0,
        method="magnitude",
        scope="global",
        exclude=(),
        seed=0,
    ):
        self.final_sparsity, self.initial_sparsity = _check_schedule(
            final_sparsity, initial_sparsity, begin_step, n_updates, frequency
        )
        _checks.check_choice(method, "method", METHODS)
        _checks.check_choice(scope, "scope", SCOPES)
        self.begin_step, self.n_updates, self.frequency = (
            begin_step,
            n_updates,
            frequency,
        )
        self.method, self.scope = method, scope
        self.exclude = _checks.check_names(exclude, "exclude")
        self.seed = _checks.check_int(seed, "seed")

    @property
    def end_step(self):
        """t_0 + n Δt: the step of the last update, where the sparsity reaches s_f."""
        return self.begin_step + self.n_updates * self.frequency

    def sparsity_at(self, step):
        """The target s_t of this schedule at `step`."""
        return polynomial_sparsity(
            step,
            self.final_sparsity,
            self.begin_step,
            self.n_updates,
            self.frequency,
            self.initial_sparsity,
        )

    def after_step(self, model, step):
        """Prune to s_t when `step` is one of the update steps; otherwise do nothing."""
        if not self.begin_step <= step <= self.end_step:
            return
        if (step - self.begin_step) % self.frequency:
            return
        prune_to_sparsity(
            model,
            self.sparsity_at(step),
            method=self.method,
            scope=self.scope,
            exclude=self.exclude,
            seed=self.seed,
        )

    def __repr__(self):
        return (
            f"GradualPruning(s_i={self.initial_sparsity}, s_f={self.final_sparsity}, "
            f"t0={self.begin_step}, n={self.n_updates}, dt={self.frequency}, "
            f"method={self.method!r}, scope={self.scope!r})"
        )


def _check_schedule(final_sparsity, initial_sparsity, begin_step, n_updates, frequency):
    final = _checks.check_fraction(final_sparsity, "final_sparsity")
    initial = _checks.check_fraction(initial_sparsity, "initial_sparsity")
    if initial > final:
        raise ValueError(
            f"initial_sparsity must be <= final_sparsity = {final}, got {initial}"
        )
    _checks.check_int(begin_step, "begin_step", low=0)
    _checks.check_int(n_updates, "n_updates", low=1)
    _checks.check_int(frequency, "frequency", low=1)
    return final, initial
