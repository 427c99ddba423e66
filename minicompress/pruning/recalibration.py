"""Adaptive BatchNorm: re-estimate BatchNorm statistics after pruning, without training.

    Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient Neural Network Pruning",
    ECCV 2020, arXiv:2007.02491.

Removing input channels shifts the statistics of the layers that read them, and BatchNorm in
eval mode keeps normalising with the old ones, which alone can send a pruned model to chance
accuracy. Re-estimating them on a few batches fixes that part:

    mu = mean over batches b of mean(x_b),   var = mean over b of var(x_b)   (momentum None)

Entry point: `recalibrate_batchnorm(model, batches, device=None)`.
"""

import torch
from torch import nn

from .. import _checks

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(model, batches, device=None):
    """Re-estimate every BatchNorm's running mean and variance on `batches`; in place.

    Args:
        model: the model; its BatchNorm statistics are replaced by the cumulative average over
            `batches` (momentum None), then the momentum and the model's mode are restored.
            No parameter changes.
        batches: an iterable of `(inputs, targets)` or of input tensors, e.g. a few training
            batches (`itertools.islice(loader, 10)`); inputs are moved to the model's device.
        device: None, or the device the model is on (kept for callers that pass it; move the
            model with `model.to(device)` to run elsewhere).

    Returns:
        The same model.

    Raises:
        TypeError: a model or batches of the wrong kind.
        ValueError: no batches, a batch that does not fit the model (the message gives its
            shape), a device other than the model's, a model without BatchNorm. Nothing
            changes before every batch has run.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
        >>> recalibrate_batchnorm(net, [torch.ones(4, 1, 5, 5)])[1].running_mean.abs().max() > 0
        tensor(True)
    """
    _checks.check_module(model)
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if not norms:
        raise ValueError(
            f"recalibrate_batchnorm needs BatchNorm layers; {type(model).__name__} has none"
        )
    here = next(model.parameters()).device
    device = _checks.check_device(device)
    if device is not None and device != here:
        raise ValueError(
            f"device must be None or the model's device {here}, got {device}"
        )
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise TypeError(
            f"batches must be an iterable of batches, got {type(batches).__name__}"
        )
    inputs = [_inputs(batch, i) for i, batch in enumerate(batches)]
    if not inputs:
        raise ValueError("batches is empty: no statistics to estimate")
    # The statistics are saved first and put back if a batch fails: a failed call changes nothing.
    saved = {
        m: (
            m.momentum,
            m.running_mean.clone(),
            m.running_var.clone(),
            m.num_batches_tracked.clone(),
        )
        for m in norms
    }
    flags = {m: m.training for m in model.modules()}
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
        model.train()
        with torch.no_grad():
            for i, x in enumerate(inputs):
                _run(model, x.to(here), i)
    except Exception:
        for m, (_, mean, var, count) in saved.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, (momentum, *_) in saved.items():
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)
    return model


def _inputs(batch, i):
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return _checks.check_tensor(inputs, f"the inputs of batch {i}", finite=True)


def _run(model, x, i):
    try:
        model(x)
    except RuntimeError as error:
        raise ValueError(
            f"batch {i} of shape {tuple(x.shape)} does not fit the model: {error}"
        ) from error
