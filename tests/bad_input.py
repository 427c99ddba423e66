"""The bad-input sweep's format: a table of calls with one bad argument each.

A `Case` is one call that must fail: `function(**kwargs)` with the models from `models()`
merged in, raising `error` with `text` in its message (by default the name of the bad
argument), and leaving every model it received, and torch's global random state, exactly as
they were. `sweep` turns one valid call and a list of (argument, bad value, error) rows into
cases, so a package adds its public functions as a few rows each:

    CASES += sweep(
        pruning.prune_channels,
        dict(amount=0.5, criterion="l1", example_input=X28),
        [("amount", 1.5, ValueError), ("criterion", None, ValueError)],
        models=lambda: {"model": models.build("lenet5")},
    )

`check(case)` runs one; `ids(cases)` names them for pytest.
"""

from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from torch import nn

__all__ = ["Case", "sweep", "check", "ids"]


@dataclass(frozen=True)
class Case:
    """function(**models(), **kwargs) must raise `error` whose message contains `text`; the
    models must be unchanged afterwards (state, structure, modes, gradients)."""

    function: Callable
    kwargs: dict
    error: type
    text: str
    models: Callable = dict
    bad: str = field(default="")  # the argument that is bad, for the test id


def sweep(function, good, rows, models=dict):
    """One `Case` per row (argument, bad value, error) or (argument, bad value, error, text):
    `good` with that argument replaced. `models` returns {argument: fresh model} for the
    arguments that are models (and must come back unchanged)."""
    cases = []
    for row in rows:
        argument, value, error = row[:3]
        text = row[3] if len(row) > 3 else argument
        kwargs = {**good, argument: value}
        cases.append(
            Case(function, kwargs, error, text, models, f"{argument}={_short(value)}")
        )
    return cases


def check(case):
    """Run one case: the error type, the argument named in the message, nothing changed."""
    models = case.models()
    before = {
        name: _snapshot(m) for name, m in models.items() if isinstance(m, nn.Module)
    }
    rng = torch.random.get_rng_state()
    with pytest.raises(case.error) as info:
        case.function(**{**models, **case.kwargs})
    assert case.text in str(info.value), f"{case.text!r} not in {str(info.value)!r}"
    for name, state in before.items():
        _assert_same(state, _snapshot(models[name]), name)
    assert torch.equal(rng, torch.random.get_rng_state()), "the global RNG was used"


def ids(cases):
    return [f"{_name(c.function)}-{c.bad}" for c in cases]


# ---------------------------------------------------------------------------------------------


def _snapshot(model):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {
        n: None if p.grad is None else p.grad.clone()
        for n, p in model.named_parameters()
    }
    modes = {n: m.training for n, m in model.named_modules()}
    return state, grads, modes, repr(model)


def _assert_same(before, after, name):
    (state, grads, modes, text), (state2, grads2, modes2, text2) = before, after
    assert text == text2, f"{name}'s structure changed"
    assert modes == modes2, f"{name}'s training flags changed"
    assert state.keys() == state2.keys(), f"{name}'s state keys changed"
    for key, value in state.items():
        assert _same(value, state2[key]), f"{name}.{key} changed"
    assert grads.keys() == grads2.keys()
    for key, value in grads.items():
        assert (value is None) == (grads2[key] is None), (
            f"{name}.{key}'s gradient changed"
        )


def _same(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():  # NaN where a test put one on purpose
        return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    return torch.equal(a, b)


def _name(function):
    return f"{function.__module__.rpartition('.')[2]}.{function.__qualname__}"


def _short(value):
    # the same text in every process (pytest-xdist compares the ids): no addresses
    text = repr(value)
    if isinstance(value, (nn.Module, torch.Tensor)) or " at 0x" in text:
        text = type(value).__name__
    return text[:24]
