"""Calibration plumbing: route layer inputs through quantizers (torch.fx), run batches.

    insert_before_layers(graph_module, layers, make)   a module on the input of chosen layers
    calibrate(model, loader, batches)                  forward passes so that observers record
    activation_quantizers(model)                       {name: ActQuant / DynamicActQuant}
    check_loader(loader)                               a non-empty, re-iterable loader

Shared by post-training quantization and by whatever else needs an observer or quantizer on
the tensors a layer reads (quantization-aware training, integer inference).
"""

import torch

from .. import _checks
from .fake_quant import ActQuant, DynamicActQuant

__all__ = ["insert_before_layers", "calibrate", "activation_quantizers", "check_loader"]


def insert_before_layers(graph_module, layers, make):
    """Route the input of every call of a layer in `layers` through a new module.

    For each node that produces such an input, one module make(node name) is added to the
    GraphModule as `<node name>_quant` and inserted after the node; the listed layers read
    it instead, other readers of the node keep the original tensor.

    Args:
        graph_module: a `torch.fx.GraphModule`, changed in place.
        layers: names of the layers (call_module targets) whose first input is routed.
        make: callable(name) -> nn.Module, e.g. an `ActQuant` or `DynamicActQuant` maker.

    Returns:
        {module name: module} of the inserted modules, in graph order.
    """
    inserted, new = {}, {}
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or node.target not in layers or not node.args:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node):
            continue
        if source.name not in inserted:
            name = f"{source.name}_quant"
            while hasattr(graph_module, name):
                name += "_"
            new[name] = make(source.name)
            graph_module.add_submodule(name, new[name])
            with graph_module.graph.inserting_before(
                node
            ):  # after source, before every reader
                inserted[source.name] = graph_module.graph.call_module(name, (source,))
        node.replace_input_with(source, inserted[source.name])
    graph_module.graph.lint()
    graph_module.recompile()
    return new


def calibrate(model, loader, batches=None):
    """Run `loader`'s batches (the first `batches` of them) through `model` in eval mode
    without gradients, so that its observers record; returns how many batches ran. The
    model's train/eval mode is restored afterwards."""
    _checks.check_module(model)
    batches = None if batches is None else _checks.check_int(batches, "batches", low=1)
    was_training, count = model.training, 0
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                if batches is not None and count >= batches:
                    break
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError(
            "the calibration loader yielded no batches; give it at least one"
        )
    return count


def activation_quantizers(model):
    """{module name: ActQuant or DynamicActQuant} of a quantized model, in model order."""
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, (ActQuant, DynamicActQuant))
    }


def check_loader(loader):
    """`loader` yields at least one batch and can be iterated again (a DataLoader, a list)."""
    _checks.first_batch(loader, "calibration_loader")  # iterable and not empty
    if iter(loader) is loader:  # calibration would start after the batch just taken
        raise TypeError(
            "calibration_loader must be re-iterable (a DataLoader or a list of batches), "
            f"got a one-shot iterator {type(loader).__name__}"
        )
