"""Training and evaluation loops shared by every method and notebook.

    seed_everything(seed)           seeds Python, NumPy and PyTorch (CPU and CUDA)
    fit(model, train_loader, ...)   trains in place with a tqdm bar; methods hook in via callbacks
    evaluate(model, loader)         top-1 accuracy in [0, 1]
    resolve_device(device)          "cpu", "cuda", "auto" or None -> torch.device

A callback is any object with one or more of these methods; `fit` calls those it finds:

    after_backward(model, step)   gradients are ready, the optimizer has not stepped yet
                                  (sparsity training adds its L1 subgradient here)
    after_step(model, step)       the optimizer has stepped (gradual pruning updates masks here)
    after_epoch(model, epoch)     an epoch has ended

`step` counts optimizer steps from 0 across epochs.
"""

import random

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import _checks

__all__ = ["seed_everything", "fit", "evaluate", "resolve_device", "progress_bar"]

_CALLBACK_METHODS = ("after_backward", "after_step", "after_epoch")
_SCHEDULES = ("constant", "onecycle")


def seed_everything(seed=0):
    """Seed Python's `random`, NumPy and PyTorch (all devices) with `seed`."""
    _checks.check_int(seed, "seed")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(device=None, model=None):
    """Turn a device request into a `torch.device`.

    None keeps the model where it is (CPU when no model is given); "auto" takes CUDA when
    present; "cuda" when no GPU is present is a ValueError rather than a silent fall-back.
    """
    if model is not None:
        _checks.check_module(model)
    device = _checks.check_device(device)
    if device is None:
        tensor = next(model.parameters(), None) if model is not None else None
        return tensor.device if tensor is not None else torch.device("cpu")
    return device


def fit(
    model,
    train_loader,
    epochs,
    lr=None,
    optimizer=None,
    loss_fn=None,
    device=None,
    progress=True,
    callbacks=(),
    schedule="constant",
    loss_inputs=False,
):
    """Train `model` in place for `epochs` passes over `train_loader`.

    Args:
        model: the `nn.Module` to train; it ends in training mode.
        train_loader: iterable of `(inputs, targets)` batches; with `loss_inputs`, a batch
            may carry more items after the targets (sample indices, say).
        epochs: number of passes, an int >= 0.
        lr: learning rate of the default optimizer, Adam; None means 1e-3. Passing both
            `lr` and `optimizer` is an error (the optimizer already has its rates).
        optimizer: a ready `torch.optim.Optimizer` over the model's parameters, or None for
            `Adam(model.parameters(), lr)`.
        loss_fn: `loss_fn(outputs, targets) -> scalar`, default cross-entropy. Distillation
            passes a function that also calls the teacher.
        device: "cpu", "cuda", "auto" or None (stay where the model is).
        progress: show a tqdm bar per epoch.
        callbacks: objects with `after_backward`, `after_step` and/or `after_epoch` methods
            (see the module docstring).
        schedule: "constant" keeps the learning rate; "onecycle" warms up to `lr` and anneals
            to nearly zero over all steps (Smith & Topin 2019, arXiv:1708.07120), which buys
            about a point of accuracy in a short run. Applies to a given optimizer too.
        loss_inputs: call `loss_fn(outputs, targets, inputs, *extra)` instead, with `extra`
            the batch's items after the targets, on the device: distillation runs the
            teacher on the inputs and contrastive distillation needs the sample indices.

    Returns:
        A dict of per-epoch lists: "loss" (mean training loss) and "accuracy" (training top-1
        accuracy measured on the fly, with the model changing during the epoch).
    """
    _check_fit(
        model,
        train_loader,
        epochs,
        lr,
        optimizer,
        loss_fn,
        progress,
        callbacks,
        schedule,
        loss_inputs,
    )
    device = resolve_device(device, model)
    flags = {m: m.training for m in model.modules()}
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3 if lr is None else lr)
    loss_fn = loss_fn if loss_fn is not None else nn.functional.cross_entropy
    scheduler = None
    if schedule == "onecycle" and epochs > 0:
        max_lr = [
            group["lr"] for group in optimizer.param_groups
        ]  # each group peaks at its own lr
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=epochs * len(train_loader)
        )
    hooks = {
        m: [getattr(c, m) for c in callbacks if callable(getattr(c, m, None))]
        for m in _CALLBACK_METHODS
    }

    history = {"loss": [], "accuracy": []}
    step = 0
    for epoch in range(epochs):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for inputs, targets, *extra in bar:
            if extra and not loss_inputs:
                raise ValueError(
                    f"a batch holds {2 + len(extra)} items; loss_fn only takes (outputs, "
                    "targets) unless loss_inputs=True"
                )
            inputs, targets = inputs.to(device), targets.to(device)
            extra = [e.to(device) for e in extra]
            if step == 0:  # a batch that does not fit fails before anything changes
                _check_batch(model, inputs, targets, flags)
                buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
            outputs = model(inputs)
            try:
                if loss_inputs:
                    loss = loss_fn(outputs, targets, inputs, *extra)
                else:
                    loss = loss_fn(outputs, targets)
                if step == 0:
                    _check_loss(loss)
            except (RuntimeError, IndexError, ValueError) as error:
                if step > 0:
                    raise
                # the training forward moved BatchNorm statistics: put them and the modes back
                _restore(model, flags, buffers)
                raise ValueError(
                    f"loss_fn fails on outputs of shape {tuple(outputs.shape)} and targets of "
                    f"shape {tuple(targets.shape)}: {error}"
                ) from error
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for hook in hooks["after_backward"]:
                hook(model, step)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for hook in hooks["after_step"]:
                hook(model, step)
            step += 1
            total_loss += loss.item() * len(targets)
            correct += (outputs.argmax(1) == targets).sum().item()
            seen += len(targets)
            bar.set_postfix(
                loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}"
            )
        if seen == 0:
            raise ValueError("train_loader yielded no batches; give it at least one")
        history["loss"].append(total_loss / max(seen, 1))
        history["accuracy"].append(correct / max(seen, 1))
        for hook in hooks["after_epoch"]:
            hook(model, epoch)
    return history


@torch.no_grad()
def evaluate(model, loader, device=None):
    """Top-1 accuracy of `model` on `loader`, a float in [0, 1].

    The model is evaluated in eval mode (BatchNorm uses running statistics) and put back in
    the mode it was in.
    """
    _checks.check_module(model)
    if isinstance(loader, (str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(
            f"loader must be an iterable of (inputs, targets), got {type(loader).__name__}"
        )
    device = resolve_device(device, model)
    model.to(device)
    was_training = model.training
    model.eval()
    correct, seen = 0, 0
    try:
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = _checks.forward(model, inputs, "the loader's inputs")
            correct += (outputs.argmax(1) == targets).sum().item()
            seen += len(targets)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("loader yielded no examples")
    return correct / seen


def progress_bar(total, enabled=True, desc=None):
    """A tqdm bar over `total` steps (disabled when not `enabled`): progress bars live here,
    not in method files, which take a `progress` flag and pass it on."""
    return tqdm(
        total=total, disable=not _checks.check_bool(enabled, "progress"), desc=desc
    )


def _check_fit(
    model, loader, epochs, lr, optimizer, loss_fn, progress, callbacks, schedule, loss_inputs
):
    """Every check of `fit`, and one eval-mode forward pass and loss on the first batch, so a
    batch, an optimizer or a loss that does not fit fails before the model changes."""
    _checks.check_module(model)
    _checks.check_int(epochs, "epochs", low=0)
    if lr is not None:
        _checks.check_real(lr, "lr", low=0, low_open=True)
    if optimizer is not None and lr is not None:
        raise ValueError(
            "pass either optimizer or lr, not both: lr only configures the default Adam optimizer"
        )
    if optimizer is not None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        own = {id(p) for p in model.parameters()}
        # a loss that takes the inputs may own learned parts (adapters, embedding heads)
        if not loss_inputs and any(id(p) not in own for g in optimizer.param_groups for p in g["params"]):
            raise ValueError(
                "optimizer holds parameters that are not the model's; build it over model.parameters()"
            )
    if loss_fn is not None:
        _checks.check_callable(loss_fn, "loss_fn")
    _checks.check_bool(progress, "progress")
    _checks.check_choice(schedule, "schedule", _SCHEDULES)
    _checks.check_bool(loss_inputs, "loss_inputs")
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(
            f"callbacks must be a list of callback objects, got {callbacks!r}"
        )
    for callback in callbacks:
        if not any(callable(getattr(callback, m, None)) for m in _CALLBACK_METHODS):
            raise TypeError(
                f"callbacks must hold objects with a method {', '.join(_CALLBACK_METHODS)}; "
                f"{type(callback).__name__} has none"
            )
    if hasattr(loader, "__len__") and len(loader) == 0 and epochs > 0:
        raise ValueError("train_loader yielded no batches; give it at least one")


def _check_batch(model, inputs, targets, flags):
    """Finite inputs and one eval-mode forward pass on the first batch, so a batch that does
    not fit is an error before any training step; the model's modes are put back on failure."""
    modes = {m: m.training for m in model.modules()}  # as the epoch set them
    try:
        _checks.check_tensor(inputs, "the train_loader's inputs", finite=True)
        _checks.check_tensor(targets, "the train_loader's targets")
        model.eval()
        with torch.no_grad():
            _checks.forward(model, inputs, "the train_loader's inputs")
    except Exception:
        _restore(model, flags)
        raise
    for m, flag in modes.items():
        m.train(flag)


def _check_loss(loss):
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")


def _restore(model, flags, buffers=None):
    """Put back the modes `fit` found and, if given, the buffers of the first step."""
    for m, flag in flags.items():
        m.train(flag)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if buffers is not None and name in buffers:
                buffer.copy_(buffers[name])
