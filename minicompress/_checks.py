"""Argument checks shared by the pruning, quantization and distillation packages.

One wording of each rule, written once. Every check raises TypeError for the wrong kind of
value and ValueError for a wrong value, with a message that names the argument, quotes what
was received and says what is allowed:

    check_int(bits, "bits", low=1, high=16)     -> "bits must be an int in [1, 16], got 17"
    check_fraction(amount, "amount")            -> "amount must be a float in [0, 1), got 1.5"
    check_real(temperature, "temperature", low=0, low_open=True)
                                                -> "temperature must be a finite number > 0, got 0"
    check_choice(method, "method", METHODS)     -> "method must be one of 'ste', 'lsq'; got 'x'"

A check returns the value it accepted (a float for a number, a tuple for names), so an entry
point reads `amount = check_fraction(amount, "amount")`. Public functions call these first,
compute everything, then change the model: a failed call leaves the caller's model as it was.
"""

import difflib
import math
import numbers
import os

import torch
from torch import fx, nn

__all__ = [
    "check_int",
    "check_real",
    "check_fraction",
    "check_bool",
    "check_choice",
    "check_callable",
    "check_module",
    "check_tensor",
    "check_axis",
    "check_same_shape",
    "check_same_size",
    "check_labels",
    "check_names",
    "check_module_names",
    "first_batch",
    "trace",
    "check_ints",
    "check_device",
    "check_path",
    "forward",
]


def check_int(value, name, low=None, high=None):
    """`value` is an int (not a bool) in [low, high]; either bound may be None."""
    allowed = "an int" + _range_text(low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_real(value, name, low=None, high=None, low_open=False, high_open=False):
    """`value` is a finite real number (not a bool) within the bounds; returns it as a float.

    NaN and ±inf are always refused: a NaN hyperparameter compares False with everything and
    would otherwise slip through every range check.
    """
    allowed = "a finite number" + _range_text(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_fraction(value, name):
    """`value` is a float in [0, 1): what `amount` and a sparsity target mean everywhere."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0 <= value < 1:  # also refuses NaN, which fails every comparison
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return float(value)


def check_bool(value, name):
    """`value` is True or False (not 0, 1 or a string, which would read as a flag silently)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(value, name, allowed):
    """`value` is one of `allowed` (a tuple, or a dict whose keys are the choices)."""
    allowed = tuple(allowed)
    if not any(value is choice or _equal(value, choice) for choice in allowed):
        listed = ", ".join(map(repr, allowed))
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_callable(value, name):
    """`value` can be called."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_module(value, name="model"):
    """`value` is an `nn.Module`."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_tensor(value, name, dims=None, finite=False):
    """`value` is a tensor, with `dims` dimensions (an int or a tuple of allowed counts), and
    only finite values when `finite` (a NaN weight would otherwise decide a mask silently)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dims is not None:
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if value.dim() not in dims:
            wanted = " or ".join(map(str, dims))
            raise ValueError(
                f"{name} must have {wanted} dimensions, got shape {tuple(value.shape)}"
            )
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{name} holds {bad} NaN or infinite value(s) of {value.numel()}; "
            "only finite values are allowed"
        )
    return value


def check_axis(axis, tensor, name="axis", allow_none=True):
    """`axis` is a dimension of `tensor` (negative counts from the end), or None when allowed;
    returns it as a non-negative int (or None)."""
    if axis is None and allow_none:
        return None
    dims = tensor.dim()
    allowed = f"an int in [{-dims}, {dims - 1}]" + (" or None" if allow_none else "")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {axis!r}")
    if not -dims <= axis < dims:
        raise ValueError(
            f"{name} must be {allowed} for a tensor of shape {tuple(tensor.shape)}, got {axis!r}"
        )
    return int(axis) % dims


def check_same_shape(a, b, a_name, b_name):
    """Tensors `a` and `b` have the same shape; the message prints both."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape:\n"
            f"  {a_name}: {tuple(a.shape)}\n  {b_name}: {tuple(b.shape)}"
        )


def check_same_size(a, b, a_name, b_name, dim=0, what="batch size"):
    """Tensors `a` and `b` have the same size along `dim` (the batch, by default), whatever
    their other dimensions; the message prints both shapes."""
    if a.shape[dim] != b.shape[dim]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same {what} (dimension {dim}):\n"
            f"  {a_name}: {tuple(a.shape)}\n  {b_name}: {tuple(b.shape)}"
        )


def check_labels(value, name, batch, classes, what="class indices"):
    """`value` is an integer tensor of `batch` indices (class labels, by default), each in
    [0, classes)."""
    check_tensor(value, name, dims=1)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer {what}, got dtype {value.dtype}")
    if value.shape[0] != batch:
        raise ValueError(f"{name} must hold {batch} {what} (one per sample), got {value.shape[0]}")
    if value.numel() and not (0 <= int(value.min()) and int(value.max()) < classes):
        raise ValueError(
            f"{name} must be {what} in [0, {classes - 1}], got values from "
            f"{int(value.min())} to {int(value.max())}"
        )
    return value


def check_names(value, name):
    """One name or a collection of names, as a tuple of str.

    A single string is one name: "bn1" means ("bn1",), never the three names "b", "n", "1".
    """
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a str or a collection of str, got {type(value).__name__}"
        ) from None
    for item in names:
        if not isinstance(item, str):
            raise TypeError(f"{name} must hold str names, got {item!r}")
    return names


def check_module_names(model, names, name, kinds=None):
    """Each of `names` is a submodule of `model` (of one of `kinds`, a tuple of classes, if
    given); returns {name: module}. The message gives the closest names (a misspelt path in
    a torchvision model with 200 modules) and then the names that would do."""
    modules = dict(model.named_modules())
    names = check_names(names, name)
    allowed = [n for n, m in modules.items() if n and (kinds is None or isinstance(m, kinds))]
    for item in names:
        if item not in modules or (kinds is not None and not isinstance(modules[item], kinds)):
            what = "" if kinds is None else " " + " or ".join(k.__name__ for k in kinds)
            close = difflib.get_close_matches(item, allowed, n=5, cutoff=0.5)
            closest = f"closest: {', '.join(map(repr, close))}; " if close else ""
            shown = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
            raise ValueError(
                f"{name} names {item!r}, which is not a{what} module of "
                f"{type(model).__name__}; {closest}allowed: {shown or 'none'}"
            )
    return {item: modules[item] for item in names}


def first_batch(loader, name):
    """The first item of `loader`; an empty or non-iterable loader is a clear error."""
    try:
        iterator = iter(loader)
    except TypeError:
        raise TypeError(
            f"{name} must be an iterable of batches (a DataLoader, say), got "
            f"{type(loader).__name__}"
        ) from None
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError(f"{name} yielded no batches; give it at least one") from None


def trace(model, purpose="this method"):
    """`torch.fx` trace of `model` as a GraphModule that shares the model's submodules.

    Raises:
        TypeError: `model` is not an `nn.Module`.
        ValueError: the model cannot be traced; the message names the innermost module being
            traced when it failed and the last node recorded before.
    """
    check_module(model)
    tracer = _RecordingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        where = f"inside module {tracer.failed_in!r}" if tracer.failed_in else "in forward"
        last = tracer.last_node
        after = f"after node {last.name!r}" if last is not None else "before any node"
        raise ValueError(
            f"torch.fx could not trace {type(model).__name__}: it failed {where}, {after} "
            f"({type(error).__name__}: {error}). {purpose[:1].upper() + purpose[1:]} needs a "
            "model torch.fx can trace: no Python control flow on tensor values."
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def check_ints(value, name, low=None):
    """`value` is a non-empty list or tuple of ints, each >= `low`; returns a tuple."""
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name} must be a non-empty list or tuple of ints, got {value!r}")
    return tuple(check_int(item, f"each of {name}", low=low) for item in value)


def check_device(value, name="device"):
    """None, "auto" (CUDA when present), or a device that exists on this machine; returns a
    `torch.device` (None stays None). An unknown or absent device is a ValueError rather than
    a raw torch error later."""
    if value is None:
        return None
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a str, a torch.device or None, got {value!r}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ValueError(f"{name} {value!r} is not a device; use 'cpu', 'cuda' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name} {value!r} was asked for but torch.cuda.is_available() is False; use 'cpu' "
            "or 'auto'"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} {value!r} is not supported here; use 'cpu', 'cuda' or 'auto'")
    return device


def check_path(value, name):
    """None, a str or an os.PathLike."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got {value!r}")
    return value


def forward(model, inputs, name="inputs"):
    """`model(inputs)`, with the RuntimeError torch raises for a shape that does not fit turned
    into a ValueError that names `name` and its shape."""
    try:
        return model(inputs)
    except RuntimeError as error:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(
            f"{name} of shape {shape} does not fit {type(model).__name__}: {error}"
        ) from error


# ---------------------------------------------------------------------------------------------


class _RecordingTracer(fx.Tracer):
    """A tracer that remembers where it was, so that a failure can name the module and node."""

    def __init__(self):
        super().__init__()
        self.last_node, self.failed_in = None, None

    def create_node(self, *args, **kwargs):
        self.last_node = super().create_node(*args, **kwargs)
        return self.last_node

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module sees the error first
                self.failed_in = self.path_of_module(m) or type(m).__name__
            raise


def _range_text(low, high, low_open, high_open):
    # " >= 1", " > 0", " in [1, 16]", " in (0, 1]" or "" for no bounds.
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def _equal(a, b):
    # `==` that never raises or returns a tensor (a tensor given where a name was expected).
    try:
        return bool(a == b)
    except Exception:
        return False
