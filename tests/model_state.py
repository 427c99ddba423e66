"""Snapshots of a model's state, for the tests that a failed call leaves the caller's model as it was."""

import torch


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    """The same keys as `snapshot` saw, each tensor equal to its copy (a NaN equal to a NaN)."""
    after = model.state_dict()
    return before.keys() == after.keys() and all(_same(v, after[k]) for k, v in before.items())


def _same(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    return torch.equal(a, b)
