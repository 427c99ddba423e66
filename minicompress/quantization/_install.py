"""Private: put one weight parametrization per quantizable layer on a copy of a model.

Shared by the binary, ternary, power-of-two, k-means and mixed-precision entry points so
that each of them validates and commits the same way: every parametrization is built from
the caller's weights first (a failure raises before anything is copied), then a deep copy
receives them. The caller's model is never changed.
"""

import copy

from torch.nn.utils import parametrize

from .. import _checks
from .ptq import quantizable_layers


def quantize_layers(model, make, exclude=(), layers=None):
    """A copy of `model` with `make(name, weight)` registered on the weight of each layer.

    Args:
        model: any nn.Module.
        make: callable(name, weight) -> parametrization; `weight` is the layer's effective
            weight (after a pruning mask, say), detached. It may raise to refuse a layer.
        exclude: names of layers left in float.
        layers: names to quantize (a subset of the quantizable layers), or None for all.
    """
    candidates = quantizable_layers(model, exclude)
    if layers is not None:
        unknown = [name for name in layers if name not in candidates]
        if unknown:
            raise ValueError(
                f"{unknown} are not quantizable layers of {type(model).__name__}; "
                f"allowed: {', '.join(candidates)}"
            )
        candidates = {name: candidates[name] for name in layers}
    if not candidates:
        raise ValueError(f"{type(model).__name__}: no layer left to quantize")
    for name, layer in candidates.items():
        if parametrize.is_parametrized(layer, "weight") and any(
            callable(getattr(p, "pack", None)) for p in layer.parametrizations.weight
        ):
            raise ValueError(
                f"layer {name!r} is already quantized ({type(layer.parametrizations.weight[-1]).__name__})"
            )
    parts = {
        name: make(name, layer.weight.detach()) for name, layer in candidates.items()
    }
    quantized = copy.deepcopy(model)
    for name, part in parts.items():
        parametrize.register_parametrization(
            quantized.get_submodule(name), "weight", part
        )
    return quantized


def parametrizations_of(model, kind):
    """{layer name: parametrization} of every weight whose last parametrization is a `kind`."""
    _checks.check_module(model)
    found = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            last = module.parametrizations.weight[-1]
            if isinstance(last, kind):
                found[name] = last
    return found
