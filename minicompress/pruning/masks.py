"""Pruning masks as parametrizations: the state every fine-grained pruning method shares.

A pruned weight is a parametrization (`torch.nn.utils.parametrize`) that multiplies the
stored weight by a bool mask, so the layer computes with

    W_eff = W ⊙ M,    M[i] = True (keep) or False (pruned)

Training, `state_dict` and optimizers work unchanged: the optimizer updates the stored
`W` (at `layer.parametrizations.weight.original`), the mask is a buffer
(`layer.parametrizations.weight.0.mask`), and a pruned entry of `W_eff` stays exactly zero
because its gradient is multiplied by the same mask. This is the mask-then-retrain
representation of Han et al., "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015, arXiv:1506.02626, and of `torch.nn.utils.prune`, which keeps
`weight_orig` and `weight_mask` with forward pre-hooks instead.

Entry points:
    Mask                       the parametrization: a bool `mask` buffer, forward W * mask
    prunable_layers(model)     Conv and Linear layers by name: what the pruning functions touch
    apply_mask(module, mask)   AND a new mask into a weight (a pruned weight stays pruned)
    get_mask(module)           the current mask (all True when the weight is not masked)
    sparsity(model)            fraction of zeros over the prunable weights
    make_permanent(model)      bake masks into the weights and remove the parametrizations
"""

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks

__all__ = [
    "Mask",
    "prunable_layers",
    "apply_mask",
    "get_mask",
    "is_pruned",
    "sparsity",
    "make_permanent",
]

# Layer types whose `weight` the pruning functions mask: every convolution and Linear.
PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


class Mask(nn.Module):
    """Parametrization W -> W ⊙ mask, with the mask a bool buffer of W's shape (True = keep).

    The buffer travels with `state_dict` and `.to(device)`; multiplying a float tensor by a
    bool tensor keeps the float dtype, so the layer's dtype is unchanged.
    """

    def __init__(self, mask):
        super().__init__()
        _checks.check_tensor(mask, "mask")
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight):
        return weight * self.mask

    def extra_repr(self):
        kept = int(self.mask.sum())
        return f"shape={tuple(self.mask.shape)}, kept={kept}/{self.mask.numel()}"


def prunable_layers(model, exclude=()):
    """The layers pruning acts on: every Conv and Linear module, by name, in model order.

    Args:
        model: any `nn.Module`.
        exclude: names of layers to leave out (as in `model.named_modules()`, e.g. "fc3"),
            a list/tuple of str or a single str.

    Returns:
        A dict {name: module}.

    Raises:
        ValueError: the model has no Conv/Linear layer, an excluded name is not one of them,
            or every layer is excluded.
    """
    _checks.check_module(model)
    exclude = _checks.check_names(exclude, "exclude")
    layers = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    }
    if not layers:
        raise ValueError(
            f"model {type(model).__name__} has no prunable layers; pruning masks the weight "
            "of Conv and Linear modules"
        )
    unknown = [name for name in exclude if name not in layers]
    if unknown:
        raise ValueError(
            f"exclude names {unknown} are not prunable layers of the model; "
            f"allowed names: {', '.join(layers)}"
        )
    kept = {name: module for name, module in layers.items() if name not in exclude}
    if not kept:
        raise ValueError(
            f"exclude={list(exclude)} leaves no layer to prune; allowed names: {', '.join(layers)}"
        )
    return kept


def get_mask(module, name="weight"):
    """The bool mask of `module.<name>`: the combined Mask parametrizations, or all True."""
    tensor = _tensor_of(module, name)
    found = _mask_module(module, name)
    if found is None:
        return torch.ones_like(tensor, dtype=torch.bool)
    return found.mask.clone()


def is_pruned(module, name="weight"):
    """Whether `module.<name>` carries a Mask parametrization."""
    _tensor_of(module, name)
    return _mask_module(module, name) is not None


def apply_mask(module, mask, name="weight"):
    """Prune `module.<name>` with `mask` (True = keep), combined with any existing mask.

    A weight already masked keeps a single Mask parametrization whose buffer becomes
    `old & mask`: a pruned weight stays pruned and parametrizations never pile up.

    Returns:
        The module.

    Raises:
        ValueError: the mask's shape differs from the weight's.
    """
    tensor = _tensor_of(module, name)
    _checks.check_tensor(mask, "mask")
    if mask.shape != tensor.shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but {name} has shape {tuple(tensor.shape)}"
        )
    mask = mask.to(device=tensor.device, dtype=torch.bool)
    found = _mask_module(module, name)
    if found is None:
        parametrize.register_parametrization(module, name, Mask(mask))
    else:
        found.mask &= mask
    return module


def sparsity(model, per_layer=False):
    """Fraction of zeros in the effective weights of the prunable (Conv/Linear) layers.

    Counts zeros of `W ⊙ M`, so a weight that is exactly zero without a mask counts too,
    and the same number describes a masked model and its `make_permanent` twin. Biases are
    not counted (pruning leaves them alone).

    Returns:
        A float in [0, 1], or with `per_layer=True` a dict {layer name: float}.
    """
    per_layer = _checks.check_bool(per_layer, "per_layer")
    counts = {}
    with torch.no_grad():
        for name, module in prunable_layers(model).items():
            weight = module.weight
            counts[name] = (
                weight.numel() - int(torch.count_nonzero(weight)),
                weight.numel(),
            )
    if per_layer:
        return {name: zeros / total for name, (zeros, total) in counts.items()}
    zeros = sum(z for z, _ in counts.values())
    total = sum(t for _, t in counts.values())
    return zeros / total


def make_permanent(model):
    """Bake every Mask into its weight and remove the parametrization.

    Uses `remove_parametrizations(..., leave_parametrized=True)`, which writes W ⊙ M into
    the same Parameter object, so an optimizer built before the call keeps working. Where
    a Mask is the first of several parametrizations (a mask under a fake quantizer, say),
    the mask is multiplied into the stored weight and only the Mask is dropped.

    Returns:
        The model, changed in place.

    Raises:
        ValueError: a Mask sits after another parametrization of the same tensor, where
            baking it into the stored weight would change what the layer computes.
    """
    _checks.check_module(model)
    todo = []
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name, chain in module.parametrizations.items():
            positions = [i for i, p in enumerate(chain) if isinstance(p, Mask)]
            if not positions:
                continue
            if len(chain) > 1 and positions != [0]:
                raise ValueError(
                    f"{module_name}.{name}: a Mask at position {positions} of "
                    f"{len(chain)} parametrizations cannot be baked into the stored weight; "
                    "only a Mask applied first can"
                )
            todo.append((module, name, len(chain) == 1))
    # Every check passed: now change the model.
    with torch.no_grad():
        for module, name, alone in todo:
            if alone:
                _own_class(module)
                parametrize.remove_parametrizations(
                    module, name, leave_parametrized=True
                )
            else:
                chain = module.parametrizations[name]
                chain.original.mul_(chain[0].mask)
                del chain[0]
    return model


# ---------------------------------------------------------------------------------------------


def _mask_module(module, name):
    """The Mask parametrization on `module.<name>`, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:
        if isinstance(p, Mask):
            return p
    return None


def _own_class(module):
    """Give a parametrized module a class of its own before a parametrization is removed.

    torch injects a subclass per parametrized module (ParametrizedLinear, ...) holding a
    property per parametrized tensor, but `copy.deepcopy` gives the copy the *same* class,
    and `remove_parametrizations` deletes the property from it: removing the mask of a
    copy would break the original (and vice versa). A private copy of the class keeps
    each model whole.
    """
    cls = type(module)
    attrs = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, attrs)


def _write_mask(module, mask, name="weight"):
    """Set the mask of `module.<name>` to exactly `mask` (not combined): used to restore."""
    found = _mask_module(module, name)
    if found is None:
        parametrize.register_parametrization(module, name, Mask(mask))
    else:
        found.mask.copy_(mask)


def _tensor_of(module, name):
    """`module.<name>`, checked to be a tensor of a module."""
    _checks.check_module(module, "module")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"name {name!r} is not a tensor of {type(module).__name__}")
    return tensor
