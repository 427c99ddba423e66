"""Quantization-aware training: train a model through its quantizers, then hand it over in the
form post-training quantization produces.

Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv:1806.08342, 2018, §3.2; Nagel et al., "A White Paper on Neural Network
Quantization", arXiv:2106.08295, 2021, §4. Post-training quantization rounds a trained
model once; at 4 bits and below the rounding error swamps what the model learned. QAT puts
the quantizers in the forward pass and keeps training, so the weights (and, in the learned
methods, the grids themselves) adapt to the rounding:

    prepare_qat(model, method, weight_bits, act_bits, loader)   a copy with quantizers wired in
    train it with any loop (train.fit)
    convert(qat_model)                                          the frozen inference model

Each method is a pair (weight quantizer, activation quantizer) in `QAT_METHODS`, one class
each with its paper, formula and gradient in its own module:

    "ste"        min-max weights, EMA activation ranges, straight-through (Jacob et al. 2018)
    "ste_fixed"  the same with the activation ranges of the first batch kept fixed
    "lsq"        learned step sizes, weights and activations (Esser et al. 2020)
    "lsq+"       LSQ weights, activations with a learned step and offset (Bhalgat et al. 2020)
    "pact"       activations clipped at a learned α (Choi et al. 2018); weights as "ste"
    "dorefa"     tanh-normalized weights, activations of clip(x, 0, 1) (Zhou et al. 2016)

What is quantized is what `quantize_ptq` quantizes: the weight of every Linear and
Conv1d/2d/3d (a parametrization) and the tensor each of them reads (a module inserted with
torch.fx); residual adds, pooling and the output logits stay float. A BatchNorm after a
convolution is folded into it during training (`qat_ste.ConvBN`). `convert` returns the
GraphModule `quantize_ptq` would: BatchNorm folded, `FakeQuantWeight` parametrizations
(frozen ones where the step was learned) and frozen `ActQuant` modules, in eval mode.

A quantizer of `QAT_METHODS` follows one protocol:
    weight:      cls(bits, axis); initialize(weight) sets learned values from the weight;
                 forward(W) -> Ŵ; export(W) -> (stored weight, FakeQuantWeight)
    activation:  cls(bits, name); the first forward call initializes it from the batch and
                 returns x unchanged; later calls fake-quantize; export() -> frozen ActQuant
"""

import copy

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from .. import _checks
from .calibration import calibrate, insert_before_layers
from .dorefa import DoReFaActQuant, DoReFaWeight
from .folding import _foldable_pairs
from .lsq import LSQActQuant, LSQPlusActQuant, LSQWeight
from .pact import PACTActQuant
from .ptq import quantizable_layers
from .qat_ste import ConvBN, EMAActQuant, FixedRangeActQuant, STEWeight

__all__ = ["QAT_METHODS", "prepare_qat", "convert", "qat_quantizers"]

# method name -> (weight quantizer class, activation quantizer class)
QAT_METHODS = {
    "ste": (STEWeight, EMAActQuant),
    "ste_fixed": (STEWeight, FixedRangeActQuant),
    "lsq": (LSQWeight, LSQActQuant),
    "lsq+": (LSQWeight, LSQPlusActQuant),
    # PACT's paper quantizes weights with DoReFa; we use the min-max weights of "ste", so that
    # "pact" differs from "ste" by its activations only (DoReFa weights also need BatchNorm)
    "pact": (STEWeight, PACTActQuant),
    "dorefa": (DoReFaWeight, DoReFaActQuant),
}

_WEIGHT_TYPES = tuple({weight for weight, _ in QAT_METHODS.values()})
_ACT_TYPES = tuple({act for _, act in QAT_METHODS.values()})


def prepare_qat(
    model,
    method,
    weight_bits,
    act_bits,
    calibration_loader,
    per_channel=True,
    fold_bn=True,
    freeze_bn_after=None,
    exclude=(),
):
    """A copy of `model` with the quantizers of `method` in its forward pass, ready to train.

    Steps, on a copy: trace, replace each Conv -> BatchNorm pair by a `ConvBN` (fold_bn),
    put an activation quantizer on the input of every Conv/Linear, run the first batch of
    `calibration_loader` through the float model so that each activation quantizer
    initializes itself (range, step or clipping value), then initialize and install the
    weight quantizers. The caller's model is never changed.

    Args:
        model: an nn.Module torch.fx can trace, usually a trained float model.
        method: a name in `QAT_METHODS`: "ste", "ste_fixed", "lsq", "lsq+", "pact", "dorefa".
        weight_bits: weight bits, an int: [2, 16] for "ste", "ste_fixed", "pact" and the LSQ
            methods, [1, 15] for "dorefa" (whose inference grid takes one bit more).
        act_bits: activation bits, an int in [1, 16] ([2, 16] for an LSQ activation with
            negative values, which needs a signed grid).
        calibration_loader: an iterable of batches (a DataLoader); its first batch, an input
            tensor or a tuple/list whose first item is the input, initializes the quantizers.
        per_channel: one weight scale (STE), step (LSQ) or max|tanh W| (DoReFa) per output
            channel (True, as `quantize_ptq`) or per layer (False, as the LSQ and DoReFa
            papers).
        fold_bn: train Conv -> BatchNorm pairs with the BatchNorm folded (`ConvBN`).
        freeze_bn_after: an int >= 0, the training steps after which folded BatchNorms use
            and keep their running statistics; None (default) never freezes them.
        exclude: names of layers left in float (weight and input).

    Returns:
        A `torch.fx.GraphModule` in training mode. Its learned quantizer parameters (steps,
        offsets, α) are ordinary parameters: build the optimizer after this call.

    Raises:
        TypeError / ValueError: an unknown method, bits the method does not support, nothing
            to quantize, a model already prepared or quantized, an empty loader, an
            untraceable model, a NaN/inf weight or activation, a folded BatchNorm with γ = 0,
            an activation the first batch does not reach.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> qat = prepare_qat(net, "lsq", 4, 4, [torch.randn(8, 4)])
        >>> list(qat_quantizers(qat))   # the inputs of layers 0 and 2 (fx calls them input_1, _1)
        ['0.weight', '2.weight', 'input_1_quant', '_1_quant']
    """
    _checks.check_module(model)
    weight_cls, act_cls = QAT_METHODS[
        _checks.check_choice(method, "method", QAT_METHODS)
    ]
    axis = 0 if _checks.check_bool(per_channel, "per_channel") else None
    fold_bn = _checks.check_bool(fold_bn, "fold_bn")
    if freeze_bn_after is not None:
        freeze_bn_after = _checks.check_int(freeze_bn_after, "freeze_bn_after", low=0)
    weight_cls(weight_bits, axis)  # checks weight_bits for this method
    act_cls(act_bits, "activation")  # checks act_bits
    batch = _checks.first_batch(calibration_loader, "calibration_loader")
    batch = batch[0] if isinstance(batch, (tuple, list)) else batch
    _checks.check_tensor(batch, "the first batch of calibration_loader")
    layers = quantizable_layers(model, exclude)
    for name, layer in layers.items():
        if parametrize.is_parametrized(layer, "weight") and any(
            isinstance(p, _WEIGHT_TYPES) for p in layer.parametrizations.weight
        ):
            raise ValueError(f"layer {name!r} is already prepared for QAT")

    qat = _checks.trace(copy.deepcopy(model), "prepare_qat")
    if fold_bn:
        _fold_into_convbn(qat, layers, freeze_bn_after)
    acts = insert_before_layers(qat, layers, lambda name: act_cls(act_bits, name))
    calibrate(qat, [batch])  # each activation quantizer initializes from this batch
    missed = [name for name, act in acts.items() if not act.initialized]
    if missed:
        raise ValueError(
            f"the first calibration batch did not reach activations {missed}"
        )
    for name in layers:
        layer = qat.get_submodule(name)
        quant = weight_cls(weight_bits, axis)
        if isinstance(layer, ConvBN):
            quant.initialize(layer.folded()[0].detach())
            layer.weight_quant = quant
        else:
            quant.initialize(layer.weight.detach())
            parametrize.register_parametrization(layer, "weight", quant)
    return qat.train()


def convert(model):
    """The inference model of a QAT model: what `quantize_ptq` returns, with the trained grids.

    On a copy: each `ConvBN` becomes its folded Conv (running statistics), each weight
    quantizer hands over a `FakeQuantWeight` (frozen at the learned step where there is one)
    and the weight it quantizes, and each activation quantizer becomes a frozen `ActQuant`
    with its current (scale, zero_point). Outputs match the QAT model's in eval mode, except
    that an LSQ+ offset is rounded to an integer zero point.

    Args:
        model: a GraphModule returned by `prepare_qat` (trained or not).

    Returns:
        A `torch.fx.GraphModule` in eval mode; `model` is unchanged.

    Raises:
        TypeError: model is not an nn.Module.
        ValueError: model has no QAT quantizer (not from prepare_qat), or a learned step or
            clipping value is not finite and > 0.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> inference = convert(prepare_qat(net, "lsq", 4, 4, [torch.randn(8, 4)]))
        >>> [type(m).__name__ for m in inference.modules() if "Quant" in type(m).__name__]
        ['FrozenQuantWeight', 'FrozenQuantWeight', 'ActQuant', 'ActQuant']
    """
    _checks.check_module(model)
    if not isinstance(model, fx.GraphModule) or not qat_quantizers(model):
        raise ValueError(
            f"convert needs a model returned by prepare_qat; this {type(model).__name__} "
            "has no quantization-aware quantizer"
        )
    converted = copy.deepcopy(model)
    acts = {
        n: m.export() for n, m in converted.named_modules() if isinstance(m, _ACT_TYPES)
    }
    layers = {}  # name -> (layer, stored weight, inference quantizer), computed before any change
    for name, module in converted.named_modules():
        if isinstance(module, ConvBN):
            weight, bias = module.folded()
            layers[name] = (module, *module.weight_quant.export(weight.detach()), bias)
        elif _qat_weight(module) is not None:
            plist = module.parametrizations.weight
            weight = plist.original
            for earlier in list(plist)[:-1]:  # a pruning mask before the quantizer, say
                weight = earlier(weight)
            layers[name] = (module, *plist[-1].export(weight.detach()), None)
    with torch.no_grad():
        for name, act in acts.items():
            _replace(converted, name, act)
        for name, (module, weight, quant, bias) in layers.items():
            if isinstance(module, ConvBN):
                conv = module.conv
                if parametrize.is_parametrized(conv, "weight"):
                    parametrize.remove_parametrizations(conv, "weight")
                conv.weight.copy_(weight)
                conv.bias = nn.Parameter(bias.detach().clone())
                parametrize.register_parametrization(conv, "weight", quant)
                _replace(converted, name, conv)
            else:
                plist = module.parametrizations.weight
                plist.original.copy_(weight)
                plist[len(plist) - 1] = quant
    converted.recompile()
    return converted.eval()


def qat_quantizers(model):
    """{name: quantizer} of the QAT quantizers in `model`, in model order: "<layer>.weight"
    for weight quantizers (the learned `step` of LSQ, say), the module name for activation
    quantizers (`step`, `offset`, `alpha`, or the `min_val`/`max_val` range)."""
    _checks.check_module(model)
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, ConvBN) and isinstance(
            module.weight_quant, _WEIGHT_TYPES
        ):
            found[f"{name}.weight"] = module.weight_quant
        elif _qat_weight(module) is not None:
            found[f"{name}.weight"] = _qat_weight(module)
        elif isinstance(module, _ACT_TYPES):
            found[name] = module
    return found


# ---------------------------------------------------------------------------------------------


def _qat_weight(module):
    """The QAT weight quantizer of a layer (the last weight parametrization), or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    last = module.parametrizations.weight[-1]
    return last if isinstance(last, _WEIGHT_TYPES) else None


def _fold_into_convbn(graph_module, layers, freeze_bn_after):
    """Replace each Conv -> BatchNorm pair (Conv among `layers`) by a ConvBN at the Conv's name."""
    pairs = [(c, b) for c, b in _foldable_pairs(graph_module) if c.target in layers]
    for conv_node, bn_node in pairs:  # check every pair before changing any
        bn = graph_module.get_submodule(bn_node.target)
        if bn.weight is not None and bool((bn.weight == 0).any()):
            raise ValueError(
                f"BatchNorm {bn_node.target!r} has γ = 0 in some channel: its folded weight "
                "cannot be divided back during training; pass fold_bn=False"
            )
    for conv_node, bn_node in pairs:
        conv = graph_module.get_submodule(conv_node.target)
        bn = graph_module.get_submodule(bn_node.target)
        _replace(graph_module, conv_node.target, ConvBN(conv, bn, freeze_bn_after))
        bn_node.replace_all_uses_with(conv_node)
        graph_module.graph.erase_node(bn_node)
        # by name: the BatchNorm now also lives inside the ConvBN, and named_modules (which
        # delete_all_unused_submodules walks) lists a shared module under one name only
        graph_module.delete_submodule(bn_node.target)
    graph_module.graph.lint()
    graph_module.recompile()


def _replace(root, name, module):
    """Put `module` at dotted path `name` of `root`."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
