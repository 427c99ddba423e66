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

__all__ = ["seed_everything", "fit", "evaluate", "resolve_device"]

_CALLBACK_METHODS = ("after_backward", "after_step", "after_epoch")
_SCHEDULES = ("constant", "onecycle")


def seed_everything(seed=0):
    """Seed Python's `random`, NumPy and PyTorch (all devices) with `seed`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(device=None, model=None):
    """Turn a device request into a `torch.device`.

    None keeps the model where it is (CPU when no model is given); "auto" takes CUDA when
    present; "cuda" when no GPU is present is a ValueError rather than a silent fall-back.
    """
    if device is None:
        if model is not None:
            tensor = next(model.parameters(), None)
            if tensor is not None:
                return tensor.device
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch.cuda.is_available() is False; use 'cpu' or 'auto'"
        )
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
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if lr is not None and not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0
    ):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if optimizer is not None and lr is not None:
        raise ValueError(
            "pass either optimizer or lr, not both: lr only configures the default Adam optimizer"
        )
    if schedule not in _SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; choose one of {', '.join(_SCHEDULES)}"
        )
    for callback in callbacks:
        if not any(callable(getattr(callback, m, None)) for m in _CALLBACK_METHODS):
            raise TypeError(
                f"callback {callback!r} has none of the methods {', '.join(_CALLBACK_METHODS)}"
            )
    device = resolve_device(device, model)
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
            outputs = model(inputs)
            if loss_inputs:
                loss = loss_fn(outputs, targets, inputs, *(e.to(device) for e in extra))
            else:
                loss = loss_fn(outputs, targets)
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
    device = resolve_device(device, model)
    model.to(device)
    was_training = model.training
    model.eval()
    correct, seen = 0, 0
    try:
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            correct += (model(inputs).argmax(1) == targets).sum().item()
            seen += len(targets)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("loader yielded no examples")
    return correct / seen
