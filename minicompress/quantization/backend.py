"""Deployment on real int8 kernels: a calibrated model onto torch's quantized CPU operators.

`integer.to_integer` shows the arithmetic in plain PyTorch; here the same scales and zero points
(ours, from calibration, not torch.ao's observers) drive torch's own int8 GEMM and convolution
kernels (`torch.ops.quantized`: FBGEMM or oneDNN under the "x86" engine, QNNPACK on ARM), the
kernels `torch.ao.quantization`'s converted modules call:

    Int8Linear / Int8Conv2d   int8 weight codes and per-channel scales as buffers, prepacked for
                              the engine; uint8 in, uint8 out on the next activation's grid
                              (requantized inside the kernel, ReLU fused), or float out where the
                              fake-quantized model leaves the output in float (the logits)
    Int8Quantize              float -> quint8 with a calibrated (S, Z)

    to_backend(model)         a calibrated `quantize_ptq` model -> a GraphModule of these

The kernels want 8-bit activations and signed 8-bit symmetric weights; signed symmetric
activations (Z = 0 on [−128, 127]) run as the same values on [0, 255] with Z = 128. What runs
in between (ReLU, max pooling, flatten) takes torch's quantized tensors as they are.

Speed depends on the CPU: with AVX2 only, u8·s8 products are summed in pairs into int16
(vpmaddubsw), which FBGEMM works around at a cost; AVX-512 VNNI (vpdpbusd) sums four products
straight into int32, and that is where int8 pays most. See `benchmarks/int8_speed.py`.
"""

import contextlib
import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .integer import _free_name, _is_relu, _set_submodule, integer_plan

__all__ = ["to_backend", "Int8Linear", "Int8Conv2d", "Int8Quantize", "ENGINES"]

# torch.backends.quantized engines with per-channel int8 Linear and Conv2d kernels on x86 and ARM.
ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


class Int8Quantize(nn.Module):
    """Float -> quint8: torch.quantize_per_tensor with the calibrated scale and zero point."""

    def __init__(self, scale, zero_point):
        super().__init__()
        self.scale, self.zero_point = float(scale), int(zero_point)

    def forward(self, x):
        with _quiet():
            return torch.quantize_per_tensor(x, self.scale, self.zero_point, torch.quint8)

    def get_extra_state(self):
        return {"scale": self.scale, "zero_point": self.zero_point}

    def set_extra_state(self, state):
        self.scale, self.zero_point = state["scale"], state["zero_point"]

    def extra_repr(self):
        return f"scale={self.scale:.6g}, zero_point={self.zero_point}"


class Int8Linear(nn.Module):
    """torch's int8 Linear kernel (quantized::linear[_relu]) with our qparams.

    State: `weight` int8 codes (C, K) and `bias` float32 (C,) (frozen parameters), the buffer
    `weight_scale` float32 (C,) (zero points 0). Extra state (plain numbers): the output's scale and zero point (None: float
    output), `relu`. The kernel's prepacked weight is rebuilt from the buffers on load.
    """

    def __init__(self, weight, weight_scale, bias, out_qparams=None, relu=False, in_qparams=None):
        super().__init__()
        # Parameters (frozen), so that `measure.count_params` counts the int8 weights as weights.
        self.weight = nn.Parameter(weight.to(torch.int8), requires_grad=False)
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach().float()
        self.bias = nn.Parameter(b.clone(), requires_grad=False)
        self.register_buffer("weight_scale", weight_scale.float())
        self.out_scale, self.out_zero_point = out_qparams if out_qparams else (None, None)
        self.in_scale, self.in_zero_point = in_qparams if in_qparams else (None, None)
        self.relu = relu
        self._pack()

    def _quantized_weight(self):
        zeros = torch.zeros(self.weight.shape[0], dtype=torch.long)
        with _quiet():
            return torch._make_per_channel_quantized_tensor(self.weight.detach(), self.weight_scale.double(), zeros, 0)

    def _pack(self):
        self._packed = torch.ops.quantized.linear_prepack(self._quantized_weight(), self.bias.detach())

    def forward(self, x):
        if self.out_scale is None:  # float output: int8 GEMM, int32 sums scaled to float
            if self.relu:
                raise AssertionError("a float-output layer never fuses its ReLU")
            return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x.dequantize(), self.in_scale, self.in_zero_point, self._packed
            )
        op = torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear
        return op(x, self._packed, self.out_scale, self.out_zero_point)

    def get_extra_state(self):
        return {k: getattr(self, k) for k in ("out_scale", "out_zero_point", "in_scale", "in_zero_point", "relu")}

    def set_extra_state(self, state):
        for key, value in state.items():
            setattr(self, key, value)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._pack()

    def extra_repr(self):
        out = "float" if self.out_scale is None else f"quint8 (scale={self.out_scale:.6g}, zero_point={self.out_zero_point})"
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, relu={self.relu}, output={out}"


class Int8Conv2d(Int8Linear):
    """torch's int8 Conv2d kernel (quantized::conv2d[_relu]) with our qparams; a float output
    dequantizes the input and the weight (no fp32-output int8 conv kernel in torch)."""

    def __init__(self, conv, weight, weight_scale, bias, out_qparams=None, relu=False, in_qparams=None):
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        super().__init__(weight, weight_scale, bias, out_qparams, relu, in_qparams)

    def _pack(self):
        self._packed = torch.ops.quantized.conv2d_prepack(
            self._quantized_weight(), self.bias.detach(), self.stride, self.padding, self.dilation, self.groups
        )

    def forward(self, x):
        if self.out_scale is None:
            weight = self._quantized_weight().dequantize()
            return F.conv2d(x.dequantize(), weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        op = torch.ops.quantized.conv2d_relu if self.relu else torch.ops.quantized.conv2d
        return op(x, self._packed, self.out_scale, self.out_zero_point)

    def get_extra_state(self):
        state = super().get_extra_state()
        state.update(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        return state

    def extra_repr(self):
        return super().extra_repr().replace("in_features", "patch").replace("out_features", "channels") + (
            f", stride={tuple(self.stride)}, padding={tuple(self.padding)}"
        )


def to_backend(model):
    """A calibrated `quantize_ptq` model as a model of torch's int8 CPU kernels, our qparams.

    Every quantized Linear / Conv2d becomes an `Int8Linear` / `Int8Conv2d` whose output lands on
    the grid of the next activation quantizer (a ReLU right after it is fused into the kernel),
    or stays float where the fake-quantized model has it in float; an activation quantizer that
    reads a float tensor becomes `Int8Quantize`. Uses the current
    `torch.backends.quantized.engine` ("x86" by default on x86 CPUs) to prepack the weights.

    Args:
        model: a calibrated model from `quantize_ptq` with 8-bit weights (signed symmetric, per
            channel or per tensor) and 8-bit per-tensor activations; it is not changed.

    Returns:
        A `torch.fx.GraphModule` in eval mode, float in and float out.

    Raises:
        TypeError / ValueError: as `integer.integer_plan` (not calibrated, dynamic, nothing
            quantized); weights or activations of other than 8 bits ("the int8 kernels run
            8-bit codes only"); affine weights; a Conv1d/Conv3d or a non-zero padding mode;
            an engine other than `ENGINES`.

    Example:
        >>> from minicompress.quantization import quantize_ptq
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> data = [torch.randn(16, 8) for _ in range(2)]
        >>> fq = quantize_ptq(net, data); int8 = to_backend(fq)
        >>> bool(torch.allclose(int8(data[0]), fq(data[0]), atol=0.05))
        True
    """
    engine = torch.backends.quantized.engine
    if engine not in ENGINES:
        raise ValueError(f"torch.backends.quantized.engine is {engine!r}; to_backend needs one of {', '.join(ENGINES)}")
    plan = integer_plan(model)
    modules = dict(model.named_modules())
    acts = plan["acts"]
    for name, act in acts.items():
        if (act.qmin, act.qmax) not in ((0, 255), (-128, 127)):
            raise ValueError(
                f"activation {act.name!r} is quantized to [{act.qmin}, {act.qmax}]; the int8 kernels run 8-bit "
                "codes only (act_bits=8)"
            )
    built = {name: _backend_layer(modules[p["module"]], p, acts, modules, model) for name, p in plan["layers"].items()}
    deployed = copy.deepcopy(model)
    graph = deployed.graph
    nodes = {n.name: n for n in graph.nodes}
    for name, act in acts.items():
        node = nodes[name]
        if name in plan["absorbed"]:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        else:
            _set_submodule(deployed, node.target, Int8Quantize(*_unsigned(act)))
    for name, layer_plan in plan["layers"].items():
        layer, fused = built[name]
        _set_submodule(deployed, layer_plan["module"], layer)
        if fused:  # the ReLU after the layer now runs inside the kernel
            relu = nodes[layer_plan["chain"][0]]
            relu.replace_all_uses_with(relu.args[0])
            graph.erase_node(relu)
        for chain_name in layer_plan["chain"][1 if fused else 0 :]:
            node = nodes[chain_name]  # quantized tensors take ReLU and pooling as they are, but a
            if node.op == "call_module" and isinstance(modules[node.target], nn.ReLU):  # shared
                target = _free_name(deployed, f"{chain_name}_q")  # ReLU(inplace=True) would
                deployed.add_submodule(target, nn.ReLU())  # write into its input: a fresh one
                node.target = target
    graph.lint()
    deployed.recompile()
    deployed.delete_all_unused_submodules()
    return deployed.eval()


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Silence torch's notice that quantized tensor types (quint8, qint8) are deprecated: they
    are what its int8 CPU kernels take up to torch 2.14, and the notice says nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def _unsigned(act):
    """(S, Z) of an 8-bit activation grid on quint8: signed codes q run as q + 128, same values."""
    shift = 128 if act.qmin < 0 else 0
    return float(act.scale), int(act.zero_point) + shift


def _backend_layer(layer, plan, acts, modules, model):
    q2, s2, z2, quantizer = plan["weight"]
    name = plan["module"]
    if (quantizer.qmin, quantizer.qmax) not in ((-128, 127), (-127, 127)):
        raise ValueError(
            f"layer {name!r} has weights on [{quantizer.qmin}, {quantizer.qmax}]; the int8 kernels run 8-bit "
            "signed codes only (weight_bits=8)"
        )
    if bool((z2 != 0).any()):
        raise ValueError(f"layer {name!r} has affine weights (zero point != 0); torch's int8 kernels need symmetric weights")
    out = plan["output"]
    out_qparams = _unsigned(acts[out]) if out is not None else None
    in_qparams = _unsigned(acts[plan["input"]])
    nodes = {n.name: n for n in model.graph.nodes}
    chain = plan["chain"]
    fused = bool(out is not None and chain and _is_relu(nodes[chain[0]], modules))
    if isinstance(layer, nn.Linear):
        return Int8Linear(q2, s2, layer.bias, out_qparams, fused, in_qparams), fused
    if not isinstance(layer, nn.Conv2d):
        raise ValueError(f"layer {name!r} is a {type(layer).__name__}; to_backend runs Linear and Conv2d layers")
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise ValueError(f"layer {name!r}: the int8 convolution supports numeric zero padding only")
    return Int8Conv2d(layer, q2, s2, layer.bias, out_qparams, fused, in_qparams), fused
