"""ONNX export of float, pruned and int8 models, and a runner for onnxruntime.

An int8 model is written in the QDQ form of the ONNX standard (the form onnxruntime's own
quantizer writes, https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
each quantized layer reads

    DequantizeLinear(x_q, S1, Z1)       its input, after QuantizeLinear(x, S1, Z1) (uint8)
    DequantizeLinear(W_q, S2, 0, axis=0) an int8 initializer, per output channel
    DequantizeLinear(b_q, S1·S2, 0)     an int32 bias, as in Jacob et al. 2018 §2.4

with OUR scales and zero points. A runtime that recognises the pattern (onnxruntime's graph
optimizer does) replaces it with an integer kernel (QLinearConv, QGemm / MatMulInteger); any
other runtime still computes the right values in float. The file stores one byte per weight.

    export_onnx(model, path, example_input)   float, pruned (effective weights, dense) or
                                              calibrated int8 (`quantize_ptq`) model -> .onnx
    OnnxModel(path, threads=1)                an onnxruntime session as a callable f(x) -> tensor

onnx and onnxruntime are imported only when these run.
"""

import copy
import os
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import _checks
from .fake_quant import ActQuant, DynamicActQuant
from .integer import _free_name, _is_relu, _set_submodule, integer_plan

__all__ = ["export_onnx", "OnnxModel", "OPSET"]

# Opset 17: QuantizeLinear / DequantizeLinear per axis (>= 13) and what onnxruntime 1.17+ runs.
OPSET = 17


def export_onnx(model, path, example_input):
    """Write `model` as an ONNX file that onnxruntime runs with the same predictions.

    Args:
        model: a float or pruned `nn.Module` (parametrized weights such as pruning masks are
            written as the values the layers compute with), or a calibrated model from
            `quantize_ptq` with 8-bit weights and activations (written in QDQ form: int8
            weight initializers, our scales and zero points). Not changed.
        path: the file to write (str or os.PathLike), in a directory that exists.
        example_input: a tensor the model accepts; the batch dimension is left free in the file.

    Returns:
        The path written, as a str.

    Raises:
        ImportError: onnx is not installed (`pip install onnx onnxruntime`).
        TypeError / ValueError: a bad argument, an example input the model refuses, a
            quantized model that is not calibrated, dynamic, or not 8-bit, a quantizer other
            than ours, a directory that does not exist or is not writable.
    """
    onnx = _import("onnx")
    _checks.check_module(model)
    _checks.check_tensor(example_input, "example_input")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path {path!r}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"path {path!r}: directory {directory!r} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give a file name such as model.onnx")
    quantized = any(isinstance(m, (ActQuant, DynamicActQuant)) for m in model.modules())
    plan = integer_plan(model) if quantized else None  # raises for a dynamic or uncalibrated model
    if plan is not None:
        _check_int8(plan)
    twin = _export_twin(model, plan)
    try:
        with torch.no_grad():
            twin(example_input)
    except RuntimeError as error:
        raise ValueError(f"example_input of shape {tuple(example_input.shape)} does not fit the model: {error}") from None
    with warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
        warnings.simplefilter("ignore")
        _write(
            twin,
            (example_input,),
            path,
            dynamo=False,  # seconds faster than the torch.export route for these small models
            opset_version=OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    if plan is not None:
        graph_model = onnx.load(path)
        _quantize_weights(onnx, graph_model, plan, model)
        onnx.checker.check_model(graph_model)
        onnx.save(graph_model, path)
    return path


def _write(*args, **kwargs):
    try:
        torch.onnx.export(*args, **kwargs)
    except OSError as error:
        raise ValueError(f"could not write the ONNX file: {error}") from None


class OnnxModel:
    """An onnxruntime CPU session as a callable: f(x: tensor) -> tensor (the first output).

    Args:
        path: an ONNX file.
        threads: intra-op threads of the session, an int >= 1 (1 to compare with torch on one
            thread); inter-op parallelism is off.
        optimize: onnxruntime's full graph optimizations (the QDQ -> integer kernel fusions).
    """

    def __init__(self, path, threads=1, optimize=True):
        ort = _import("onnxruntime")
        threads = _checks.check_int(threads, "threads", low=1)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = ort.GraphOptimizationLevel
        options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
        self.path = os.fspath(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])

    def __repr__(self):
        return f"OnnxModel({os.path.basename(self.path)!r})"


# ---------------------------------------------------------------------------------------------


class _QDQ(nn.Module):
    """x -> DQ(Q(x)): torch's fake-quant op, which the exporter writes as QuantizeLinear and
    DequantizeLinear with this (S, Z)."""

    def __init__(self, scale, zero_point, qmin, qmax):
        super().__init__()
        self.scale, self.zero_point, self.qmin, self.qmax = float(scale), int(zero_point), qmin, qmax

    def forward(self, x):
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


def _import(name):
    try:
        return __import__(name)
    except ImportError:
        raise ImportError(f"{name} is needed for ONNX export and runs: pip install onnx onnxruntime") from None


def _check_int8(plan):
    for act in plan["acts"].values():
        if (act.qmin, act.qmax) not in ((0, 255), (-128, 127)):
            raise ValueError(
                f"activation {act.name!r} is quantized to [{act.qmin}, {act.qmax}]; ONNX QuantizeLinear "
                "writes 8-bit codes (act_bits=8)"
            )
    for layer_plan in plan["layers"].values():
        quantizer = layer_plan["weight"][3]
        if (quantizer.qmin, quantizer.qmax) not in ((-128, 127), (-127, 127)):
            raise ValueError(
                f"layer {layer_plan['module']!r} has weights on [{quantizer.qmin}, {quantizer.qmax}]; the "
                "QDQ file stores signed 8-bit weights (weight_bits=8)"
            )


def _export_twin(model, plan):
    """A plain copy: parametrized weights baked in, each ActQuant replaced by `_QDQ`."""
    twin = copy.deepcopy(model).eval()
    for module in list(twin.modules()):
        if parametrize.is_parametrized(module):
            _bake(module)
    if plan is None:
        return twin
    for name, layer_plan in plan["layers"].items():  # the weight exactly as its codes say
        q2, s2, z2, _ = layer_plan["weight"]
        layer = twin.get_submodule(layer_plan["module"])
        shape = [-1] + [1] * (q2.dim() - 1)
        with torch.no_grad():
            layer.weight.copy_((q2.float() - z2.reshape(shape)) * s2.reshape(shape))
    modules = dict(model.named_modules())
    nodes = {node.name: node for node in twin.graph.nodes}
    for name, layer_plan in plan["layers"].items():
        # Q-DQ on the output grid right after the layer (after its ReLU) and after each op up to
        # the next quantized input, as onnxruntime's quantizer places them: its optimizer then
        # sees DQ -> Conv -> Q (-> QLinearConv) and DQ -> MaxPool -> Q. The values do not
        # change: rounding commutes with these ops (see `integer`).
        out, chain = layer_plan["output"], layer_plan["chain"]
        if out is None:
            continue
        start = 1 if chain and _is_relu(nodes[chain[0]], modules) else 0
        after = ([name] + chain)[start:-1]  # the last one is followed by the ActQuant already
        act = plan["acts"][out]
        for node_name in after:
            node = nodes[node_name]
            target = _free_name(twin, f"{node_name}_qdq")
            twin.add_submodule(target, _QDQ(act.scale, act.zero_point, act.qmin, act.qmax))
            with twin.graph.inserting_after(node):
                qdq = twin.graph.call_module(target, (node,))
            node.replace_all_uses_with(qdq, delete_user_cb=lambda user: user is not qdq)
    for node in twin.graph.nodes:
        if node.name in plan["acts"]:
            act = plan["acts"][node.name]
            _set_submodule(twin, node.target, _QDQ(act.scale, act.zero_point, act.qmin, act.qmax))
    twin.graph.lint()
    twin.recompile()
    return twin


def _bake(module):
    """Replace a parametrized module's tensors by their current values, in place.

    Not `parametrize.remove_parametrizations`: a deep copy shares its original's generated
    "Parametrized..." class, and removing the last parametrization deletes the tensor's
    property from that class, breaking the original model too.
    """
    with torch.no_grad():
        values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    module.__class__ = module.__class__.__bases__[0]  # the class it had before parametrization
    del module.parametrizations
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))


def _quantize_weights(onnx, graph_model, plan, model):
    """Replace each quantized layer's float weight (and bias) initializer by int8 (int32) codes
    and a DequantizeLinear node producing the tensor of the old name."""
    from onnx import helper, numpy_helper

    graph = graph_model.graph
    initializers = {init.name: init for init in graph.initializer}
    new_nodes, new_inits = [], []
    for layer_plan in plan["layers"].values():
        q2, s2, _, _ = layer_plan["weight"]
        name = layer_plan["module"]
        act = plan["acts"][layer_plan["input"]]
        weight_name, bias_name = f"{name}.weight", f"{name}.bias"
        if weight_name not in initializers:
            raise AssertionError(f"the exporter did not keep the initializer {weight_name!r}")
        pieces = [(weight_name, q2.to(torch.int8), s2.float(), torch.zeros_like(s2, dtype=torch.int8))]
        bias = model.get_submodule(name).bias
        if bias is not None and bias_name in initializers:
            bias_scale = (act.scale.double() * s2.double()).float()
            q_bias = torch.round(bias.detach().double() / bias_scale.double()).to(torch.int32)
            pieces.append((bias_name, q_bias, bias_scale, torch.zeros_like(q_bias)))
        for tensor_name, codes, scale, zero_point in pieces:
            graph.initializer.remove(initializers[tensor_name])
            new_inits += [
                numpy_helper.from_array(codes.numpy(), f"{tensor_name}_quantized"),
                numpy_helper.from_array(scale.numpy(), f"{tensor_name}_scale"),
                numpy_helper.from_array(zero_point.numpy(), f"{tensor_name}_zero_point"),
            ]
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{tensor_name}_quantized", f"{tensor_name}_scale", f"{tensor_name}_zero_point"],
                    [tensor_name],
                    name=f"{tensor_name}_DequantizeLinear",
                    axis=0,
                )
            )
    graph.initializer.extend(new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)  # dequantized weights first: the graph stays sorted
