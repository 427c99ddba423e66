"""Integer-only inference: int8 weights and activations, int32 accumulators, fixed-point rescaling.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, arXiv:1712.05877, §2.2-2.4. With r = S(q − Z) for the input x (S1, Z1),
the weight W (S2, Z2) and the output y (S3, Z3), a Linear or Conv layer y = Wx + b is, over the
K products of each output,

    acc  = Σ q1·q2 − Z2·Σ q1 − Z1·Σ q2 + K·Z1·Z2 + q_b      int32; q_b = round(b / (S1·S2))
    q3   = clamp(Z3 + M·acc),  M = S1·S2 / S3 = 2^(−n)·M0,  M0 ∈ [0.5, 1)           (eq. 5-7)

and M·acc is computed without floats: M0 is stored as the int32 round(M0·2^31), the product
with acc is a rounding "doubling high multiply" and 2^(−n) a rounding right shift (gemmlowp's
SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, which TFLite uses: ties upwards,
then ties away from zero, where the float model rounds ties to even). A ReLU after the
layer is a clamp at Z3 (q ≥ Z3 means r ≥ 0), max pooling and flattening work on the codes
directly: a monotone rounding commutes with both. Weights here are per output channel, so M, M0
and n are vectors.

    to_integer(model)          a calibrated `quantize_ptq` model -> a GraphModule that runs it
                               in integers (IntegerLinear, IntegerConv, QuantizeInput, ...)
    integer_plan(model)        which layer writes which activation's codes (shared with
                               `backend` and `export`)
    cores: quantize_multiplier, rounding_doubling_high_mul, rounding_right_shift, requantize,
           integer_matmul, im2col, accumulator_bound

What stays float: anything the fake-quantized model computes in float between a layer and the
next quantized input, other than ReLU, max pooling, average pooling onto the same grid,
flattening and reshaping: residual additions, for instance (`quantize_ptq` leaves them float).
There the layer's int32 accumulator is dequantized, acc·S1·S2, the float op runs, and the next
layer's `QuantizeInput` rounds its result onto the grid again.
"""

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from .fake_quant import ActQuant, DynamicActQuant
from .ptq import QUANTIZED_TYPES
from .quantizers import round_to_grid

__all__ = [
    "to_integer",
    "integer_plan",
    "IntegerLinear",
    "IntegerConv",
    "QuantizeInput",
    "IntegerReLU",
    "IntegerMaxPool",
    "IntegerAvgPool",
    "quantize_multiplier",
    "rounding_doubling_high_mul",
    "rounding_right_shift",
    "requantize",
    "integer_matmul",
    "im2col",
    "accumulator_bound",
    "INT32_MAX",
]

INT32_MAX = 2**31 - 1

# Ops that act on codes exactly as on the values they stand for, because the rounding
# q = clamp(round(x/S) + Z) is monotone: Q(max(a, b)) = max(Q(a), Q(b)), Q(relu(x)) = max(Q(x), Z).
_CODE_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Flatten, nn.Identity)
_CODE_FUNCTIONS = (torch.relu, F.relu, torch.flatten)
_CODE_METHODS = ("relu", "flatten", "view", "reshape")
_RELU = (nn.ReLU, torch.relu, F.relu, "relu")


# --- the arithmetic (cores) ----------------------------------------------------------------


def quantize_multiplier(M):
    """Core: M = M0_int · 2^(−31) · 2^(−n) with M0_int = round(M0 · 2^31), M0 ∈ [0.5, 1).

    Args:
        M: real multipliers > 0, a float64 tensor of any shape (one per output channel).

    Returns:
        (M0_int, n): int64 tensors; M0_int in [2^30, 2^31), n the right shift (negative for
        a left shift, when M >= 1).
    """
    mantissa, exponent = torch.frexp(M.double())  # M = mantissa · 2^exponent, mantissa in [0.5, 1)
    m0 = torch.round(mantissa * 2**31).long()
    carry = m0 == 2**31  # mantissa rounded up to 1.0: use 0.5 and one more power of two
    m0 = torch.where(carry, m0 // 2, m0)
    return m0, (-exponent - carry.long()).long()


def rounding_doubling_high_mul(a, b):
    """Core: round(a · b / 2^31), ties upwards: gemmlowp's SaturatingRoundingDoublingHighMul.

    The nudge ±2^30 before a division that truncates toward zero rounds 2.5 to 3 and −2.5 to
    −2. `a` int32 values, `b` the int32 multiplier M0_int; int64 tensors out. (The one
    overflowing case, a = b = −2^31, cannot occur: M0_int > 0.)
    """
    ab = a.long() * b.long()  # exact in int64: |ab| < 2^62
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")


def rounding_right_shift(x, n):
    """Core: round(x / 2^n), ties away from zero: gemmlowp's RoundingDivideByPOT (n >= 0)."""
    mask = (1 << n) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).long()
    return (x >> n) + (remainder > threshold).long()


def requantize(acc, m0, n, zero_point, qmin, qmax):
    """Core: q3 = clamp(Z3 + round(acc · M0_int · 2^(−31) · 2^(−n)), q_min, q_max), all in integers.

    acc (..., C) int32 accumulators; m0, n (C,) from `quantize_multiplier`.
    """
    left, right = torch.clamp(-n, min=0), torch.clamp(n, min=0)
    scaled = rounding_doubling_high_mul(acc.long() << left, m0)
    return torch.clamp(rounding_right_shift(scaled, right) + zero_point, qmin, qmax)


def integer_matmul(q1, z1, q2, z2, q_bias):
    """Core: the int32 accumulators of Jacob et al.'s eq. 7, the zero-point cross terms written out.

    q1 (N, K) input codes, q2 (C, K) weight codes, z1 a number, z2 (C,), q_bias (C,) int32.
    Returns (N, C) int32: Σ q1·q2 − Z2·Σ q1 − Z1·Σ q2 + K·Z1·Z2 + q_b. `accumulator_bound`
    proves that no partial sum leaves int32 for the layer sizes used.
    """
    q1, q2 = q1.int(), q2.int()
    K = q1.shape[1]
    products = q1 @ q2.T  # (N, C): Σ_k q1[i, k]·q2[c, k], the int8 x int8 -> int32 GEMM
    row_sums = q1.sum(dim=1, keepdim=True, dtype=torch.int32)  # (N, 1): Σ_k q1, per input row
    col_sums = q2.sum(dim=1, dtype=torch.int32)  # (C,): Σ_k q2, precomputed once per layer
    return products - z2 * row_sums - z1 * col_sums + K * z1 * z2 + q_bias


def im2col(q, kernel_size, stride, padding, dilation, pad_code):
    """Core: the convolution's input patches as rows, (B·L, C·k1·k2...), L output positions.

    Padding writes the code of real zero, Z1 (Jacob et al. §2.3): padding with 0 would add
    −Z1·S1 to every padded product.
    """
    pad = [p for p in reversed(padding) for _ in range(2)]  # F.pad lists the last dim first
    q = F.pad(q, pad, value=pad_code)
    for d, (k, s, r) in enumerate(zip(kernel_size, stride, dilation)):
        q = q.unfold(2 + d, r * (k - 1) + 1, s)[..., ::r]  # a window axis appended per dim
    spatial = len(kernel_size)
    B, C, out = q.shape[0], q.shape[1], q.shape[2 : 2 + spatial]
    # (B, C, O1.., k1..) -> (B, O1.., C, k1..) -> (B·L, C·k1·k2...)
    q = q.permute(0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    return q.reshape(-1, C * int(torch.tensor(kernel_size).prod())), (B, *out)


def accumulator_bound(K, act_range, weight_range, z1, z2, q_bias):
    """Core: the largest |partial sum| `integer_matmul` can reach; it must stay <= 2^31 − 1.

    Each term is bounded on its own, so no intermediate overflows either:
    K·max|q1|·max|q2| + K·|Z2|·max|q1| + K·|Z1|·max|q2| + K·|Z1·Z2| + max|q_b|.
    """
    a = max(abs(v) for v in act_range)
    w = max(abs(v) for v in weight_range)
    z1, z2 = abs(int(z1)), int(z2.abs().max()) if torch.is_tensor(z2) else abs(int(z2))
    bias = int(q_bias.abs().max()) if q_bias.numel() else 0
    return K * a * w + K * z2 * a + K * z1 * w + K * z1 * z2 + bias


# --- the modules of an integer model ---------------------------------------------------------


class QuantizeInput(nn.Module):
    """Float -> codes: q = clamp(round(x / S) + Z, q_min, q_max), stored as (u)int8."""

    def __init__(self, scale, zero_point, qmin, qmax):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("zero_point", zero_point.detach().clone().int())
        self.qmin, self.qmax = qmin, qmax
        self.dtype = _code_dtype(qmin, qmax)

    def forward(self, x):
        return round_to_grid(x, self.scale, self.zero_point, self.qmin, self.qmax).to(self.dtype)

    def extra_repr(self):
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}, qrange=({self.qmin}, {self.qmax})"


class IntegerReLU(nn.Module):
    """ReLU on codes: max(q, Z), since q >= Z exactly when S(q − Z) >= 0."""

    def __init__(self, zero_point):
        super().__init__()
        self.zero_point = int(zero_point)

    def forward(self, q):
        return torch.clamp(q, min=self.zero_point)


class IntegerMaxPool(nn.Module):
    """Max pooling of codes: the pooling module applied to the codes held as int32 (torch's
    uint8 max pooling refuses inputs of more than 255 elements per channel plane)."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, q):
        return self.pool(q.int()).to(q.dtype)


class IntegerAvgPool(nn.Module):
    """Adaptive average pooling of codes on one grid: the mean code, rounded half away from 0.

    mean(S(q − Z)) = S(mean(q) − Z), so the mean of the codes is the code of the mean before
    rounding. The identity when the output size equals the input's (LeNet-5 on 28 x 28).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, q):
        H, W = q.shape[-2:]
        oh, ow = nn.modules.utils._pair(self.output_size)
        oh, ow = oh or H, ow or W
        if (oh, ow) == (H, W):
            return q
        rows = [(i * H // oh, -(-(i + 1) * H // oh)) for i in range(oh)]  # adaptive windows
        cols = [(j * W // ow, -(-(j + 1) * W // ow)) for j in range(ow)]
        q32 = q.int()
        sums = torch.stack(
            [torch.stack([q32[..., a:b, c:d].sum(dim=(-2, -1)) for c, d in cols], -1) for a, b in rows], -2
        )
        counts = torch.tensor([[(b - a) * (d - c) for c, d in cols] for a, b in rows])
        mean = torch.sign(sums) * torch.div(sums.abs() + counts // 2, counts, rounding_mode="floor")
        return mean.to(q.dtype)


class IntegerLinear(nn.Module):
    """A Linear layer in integers: int8 weight codes, int32 bias, requantization or dequantization.

    Args (as `to_integer` builds it): weight codes q2 (C, K) int8; weight scale S2 and zero
    point Z2 (C,); bias (C,) float or None; input (S1, Z1); output (S3, Z3, q_min, q_max), or
    None for a float output acc·S1·S2 (the fake-quantized model's logits, say).
    """

    def __init__(self, q_weight, w_scale, w_zero, bias, in_qparams, out_qparams):
        super().__init__()
        s1, z1 = in_qparams
        self.register_buffer("weight", q_weight)  # int8 codes (uint8 for an unsigned grid)
        self.register_buffer("w_zero", w_zero.int())
        self.register_buffer("acc_scale", (s1.double() * w_scale.double()).float())  # S1·S2
        self.z1 = int(z1)
        b = torch.zeros(q_weight.shape[0]) if bias is None else bias.detach()
        q_bias = torch.round(b.double() / (s1.double() * w_scale.double()))
        if q_bias.abs().max() > INT32_MAX:
            raise ValueError("a bias does not fit int32 at scale S1·S2")
        self.register_buffer("bias", q_bias.int())  # int32, scale S1·S2, zero point 0 (§2.4)
        self.out_qparams = out_qparams is not None
        if self.out_qparams:
            s3, z3, self.qmin, self.qmax = out_qparams
            m0, n = quantize_multiplier(s1.double() * w_scale.double() / s3.double())
            self.register_buffer("m0", m0.int())  # M0 as int32 (Jacob et al. §2.2)
            self.register_buffer("shift", n.int())
            self.z3, self.dtype = int(z3), _code_dtype(self.qmin, self.qmax)

    def accumulate(self, q1):
        """int32 accumulators (N, C) of input codes q1 (N, K)."""
        return integer_matmul(q1, self.z1, self.weight, self.w_zero, self.bias)

    def output(self, acc):
        if not self.out_qparams:
            return acc.float() * self.acc_scale  # dequantize: r = S1·S2·acc
        q3 = requantize(acc, self.m0.long(), self.shift.long(), self.z3, self.qmin, self.qmax)
        return q3.to(self.dtype)

    def forward(self, q1):
        lead = q1.shape[:-1]
        acc = self.accumulate(q1.reshape(-1, q1.shape[-1]))  # (N, C)
        return self.output(acc).reshape(*lead, -1)

    def extra_repr(self):
        out = f"codes, zero_point={self.z3}" if self.out_qparams else "float"
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, input zero_point={self.z1}, output={out}"


class IntegerConv(IntegerLinear):
    """A Conv1d/2d/3d in integers: `im2col` patches (padded with Z1) times the weight rows."""

    def __init__(self, conv, q_weight, w_scale, w_zero, bias, in_qparams, out_qparams):
        super().__init__(q_weight.flatten(1), w_scale, w_zero, bias, in_qparams, out_qparams)
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups

    def forward(self, q1):
        rows, shape = im2col(q1, self.kernel_size, self.stride, self.padding, self.dilation, self.z1)
        G, C = self.groups, self.weight.shape[0]
        per_group = rows.shape[1] // G
        accs = [  # groups see their own slice of input channels and of output channels
            integer_matmul(
                rows[:, g * per_group : (g + 1) * per_group],
                self.z1,
                self.weight[g * C // G : (g + 1) * C // G],
                self.w_zero[g * C // G : (g + 1) * C // G],
                self.bias[g * C // G : (g + 1) * C // G],
            )
            for g in range(G)
        ]
        acc = torch.cat(accs, dim=1)  # (B·L, C)
        out = self.output(acc).reshape(shape[0], -1, C)  # (B, L, C)
        return out.transpose(1, 2).reshape(shape[0], C, *shape[1:])  # (B, C, O1, ...)

    def extra_repr(self):
        return super().extra_repr().replace("in_features", "patch").replace("out_features", "channels") + (
            f", kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


# --- the plan and the entry point ------------------------------------------------------------


def integer_plan(model):
    """Which activation grid each quantized layer of a calibrated model writes its output to.

    Returns a dict:
        "layers": {layer node name: {"module", "input" (ActQuant node), "output" (ActQuant
            node or None: float output), "chain" (nodes between them), "weight": (q2, S2, Z2,
            weight bits)}}
        "absorbed": names of ActQuant nodes whose input already lies on their grid (a layer
            requantized onto it), so they do nothing in an integer model.
        "acts": {ActQuant node name: the ActQuant module}, every activation quantizer.

    Raises:
        TypeError: not a GraphModule (a model from `quantize_ptq`).
        ValueError: no frozen ActQuant (not calibrated), a dynamic or per-channel activation
            quantizer, more than 8 bits, a layer called twice, nothing quantized.
    """
    if not isinstance(model, fx.GraphModule):
        raise TypeError(
            f"model must be a calibrated model from quantize_ptq (a torch.fx.GraphModule), got {type(model).__name__}"
        )
    modules = dict(model.named_modules())
    if any(isinstance(m, DynamicActQuant) for m in modules.values()):
        raise ValueError(
            "model quantizes its activations dynamically (quantize_dynamic); integer inference needs "
            "calibrated, fixed activation grids: use quantize_ptq"
        )
    acts = {n.name: modules[n.target] for n in model.graph.nodes if _is_module(n, modules, ActQuant)}
    if not acts:
        raise ValueError(
            "model has no activation quantizer: it was not calibrated; quantize it with quantize_ptq first"
        )
    for name, act in acts.items():
        if not act.quantizing:
            raise ValueError(f"activation quantizer {act.name!r} was not calibrated (not frozen): use quantize_ptq")
        if act.axis is not None:
            raise ValueError(f"activation quantizer {act.name!r} is per-channel; integer kernels need one grid per tensor")
        if act.qmax - act.qmin > 255:
            raise ValueError(
                f"activation quantizer {act.name!r} has {(act.qmax - act.qmin + 1).bit_length() - 1} bits; "
                "integer inference here stores activations in 8 bits at most"
            )
    layers, calls = {}, {}
    for node in model.graph.nodes:
        if not _is_module(node, modules, QUANTIZED_TYPES):
            continue
        source = node.args[0] if node.args else None
        if not (isinstance(source, fx.Node) and source.name in acts):
            continue  # a layer left in float (excluded)
        calls[node.target] = calls.get(node.target, 0) + 1
        if calls[node.target] > 1:
            raise ValueError(f"layer {node.target!r} is called more than once; integer inference needs one call per layer")
        layer = modules[node.target]
        layers[node.name] = {
            "module": node.target,
            "input": source.name,
            "weight": _weight_codes(layer, node.target),
            **_output_chain(node, modules, acts),
        }
    if not layers:
        raise ValueError("model has no quantized layer reading a quantized activation: nothing to run in integers")
    absorbed = {plan["output"] for plan in layers.values() if plan["output"] is not None}
    return {"layers": layers, "absorbed": absorbed, "acts": acts}


def to_integer(model):
    """An integer-only twin of a calibrated `quantize_ptq` model (Jacob et al. 2018).

    Every quantized Linear / Conv becomes an `IntegerLinear` / `IntegerConv` (int8 weight codes,
    int32 bias and accumulators, requantization by M0 and a shift onto the next activation's
    grid), a ReLU between becomes a clamp at Z3, and an activation quantizer that reads a
    float tensor becomes `QuantizeInput`. The result takes and returns float tensors; inside,
    activations travel as (u)int8 codes wherever the fake-quantized model has them on a grid.
    Its outputs agree with the fake-quantized model's to within one quantization step; the
    differences come from rounding the bias to int32, ties rounded away from zero instead of to
    even, and the 31-bit M0.

    Args:
        model: a calibrated model from `quantize_ptq` (weights and activations of at most 8
            bits, activations per tensor); it is not changed.

    Returns:
        A `torch.fx.GraphModule` in eval mode.

    Raises:
        TypeError / ValueError: as `integer_plan`; a weight of more than 8 bits; a layer whose
            int32 accumulator could overflow (`accumulator_bound`); a Conv with a padding mode
            other than zeros.

    Example:
        >>> from minicompress.quantization import quantize_ptq
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        >>> data = [torch.randn(32, 8) for _ in range(2)]
        >>> fq = quantize_ptq(net, data); integer = to_integer(fq)
        >>> integer(data[0]).sub(fq(data[0])).abs().max() < 0.01   # logits up to about 0.7
        tensor(True)
    """
    plan = integer_plan(model)
    modules = dict(model.named_modules())
    built = {}
    for name, layer_plan in plan["layers"].items():  # build everything before changing anything
        built[name] = _integer_layer(modules[layer_plan["module"]], layer_plan, plan["acts"])
    integer = copy.deepcopy(model)
    graph = integer.graph
    nodes = {n.name: n for n in graph.nodes}
    for name, act in plan["acts"].items():
        node = nodes[name]
        if name in plan["absorbed"]:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        else:
            _set_submodule(integer, node.target, QuantizeInput(act.scale, act.zero_point, act.qmin, act.qmax))
    for name, layer_plan in plan["layers"].items():
        _set_submodule(integer, layer_plan["module"], built[name])
        out = layer_plan["output"]
        z3 = int(plan["acts"][out].zero_point) if out is not None else None
        for chain_name in layer_plan["chain"]:
            node = nodes[chain_name]
            replacement = _code_op(node, modules, z3)
            if replacement is not None:
                target = _free_name(integer, f"{chain_name}_codes")
                integer.add_submodule(target, replacement)
                with graph.inserting_after(node):
                    new = graph.call_module(target, (node.args[0],))
                node.replace_all_uses_with(new)
                graph.erase_node(node)
    graph.lint()
    integer.recompile()
    integer.delete_all_unused_submodules()
    return integer.eval()


# ---------------------------------------------------------------------------------------------


def _is_module(node, modules, kinds):
    return node.op == "call_module" and isinstance(modules.get(node.target), kinds)


def _on_codes(node, modules):
    """Does this node compute the same on codes as on values (see _CODE_MODULES)?"""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Dropout):
            return True  # the identity in eval mode, the only mode an integer model runs in
        return isinstance(module, _CODE_MODULES + (nn.AdaptiveAvgPool2d,))
    if node.op == "call_function":
        return node.target in _CODE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _CODE_METHODS
    return False


def _output_chain(node, modules, acts):
    """Follow the layer's output through single-reader code-safe ops to an ActQuant, if any."""
    chain, current = [], node
    while len(current.users) == 1:
        (user,) = current.users
        if user.name in acts:
            return {"output": user.name, "chain": chain}
        if not _on_codes(user, modules) or user.args[0] is not current:
            break
        chain.append(user.name)
        current = user
    return {"output": None, "chain": []}


def _weight_codes(layer, name):
    """(q2, S2, Z2, bits) of a layer's fake-quantized weight, as its quantizer rounds it."""
    if not parametrize.is_parametrized(layer, "weight"):
        raise ValueError(f"layer {name!r} reads a quantized activation but its weight is not fake-quantized")
    chain = layer.parametrizations.weight
    quantizer = chain[-1]
    if not all(hasattr(quantizer, a) for a in ("qparams", "qmin", "qmax", "axis")):
        raise ValueError(f"layer {name!r}: the last weight parametrization {type(quantizer).__name__} is not a uniform quantizer")
    if quantizer.qmax - quantizer.qmin > 255:
        raise ValueError(
            f"layer {name!r} has {quantizer.bits}-bit weights; integer inference here stores weights in 8 bits at most"
        )
    with torch.no_grad():
        weight = chain.original
        for p in list(chain)[:-1]:  # a pruning mask before the quantizer, say
            weight = p(weight)
        scale, zero_point = quantizer.qparams(weight)
        C = weight.shape[0]
        scale = scale.expand(C).clone() if scale.dim() == 0 else scale
        zero_point = zero_point.expand(C).clone() if zero_point.dim() == 0 else zero_point
        if quantizer.axis not in (None, 0):
            raise ValueError(f"layer {name!r}: weights quantized along axis {quantizer.axis}; integer kernels need axis 0")
        shape = [-1] + [1] * (weight.dim() - 1)
        q = round_to_grid(weight, scale.reshape(shape), zero_point.reshape(shape), quantizer.qmin, quantizer.qmax)
        # A channel whose weights are all zero (pruned) keeps code 0 under any scale: give it
        # scale 1 so that its bias, counted in units of S1·S2, fits int32.
        dead = (q == zero_point.reshape(shape)).flatten(1).all(dim=1) & (weight.flatten(1) == 0).all(dim=1)
        scale = torch.where(dead, torch.ones_like(scale), scale)
    return q.to(_code_dtype(quantizer.qmin, quantizer.qmax)), scale.float(), zero_point.int(), quantizer


def _integer_layer(layer, plan, acts):
    q2, s2, z2, quantizer = plan["weight"]
    act_in = acts[plan["input"]]
    out = plan["output"]
    out_qparams = None
    if out is not None:
        a = acts[out]
        out_qparams = (a.scale, a.zero_point, a.qmin, a.qmax)
    in_qparams = (act_in.scale, act_in.zero_point)
    if isinstance(layer, nn.Linear):
        integer = IntegerLinear(q2, s2, z2, layer.bias, in_qparams, out_qparams)
    else:
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"layer {plan['module']!r}: integer convolution supports numeric zero padding only")
        integer = IntegerConv(layer, q2, s2, z2, layer.bias, in_qparams, out_qparams)
    K = integer.weight.shape[1]  # products per output (per group for a grouped conv)
    bound = accumulator_bound(
        K, (act_in.qmin, act_in.qmax), (quantizer.qmin, quantizer.qmax), act_in.zero_point, z2, integer.bias
    )
    if bound > INT32_MAX:
        raise ValueError(
            f"layer {plan['module']!r}: its int32 accumulator could reach {bound:,} > 2^31 - 1 "
            f"({K} products per output); split the layer or use fewer bits"
        )
    return integer


def _is_relu(node, modules):
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    return node.op in ("call_function", "call_method") and node.target in _RELU


def _code_op(node, modules, z3):
    """The integer replacement of a chain op, or None when it runs on codes as it is."""
    if _is_relu(node, modules):
        return IntegerReLU(z3)
    module = modules.get(node.target) if node.op == "call_module" else None
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return IntegerAvgPool(module.output_size)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return IntegerMaxPool(copy.deepcopy(module))
    return None


def _set_submodule(root, name, module):
    parent, _, last = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, module)


def _free_name(root, name):
    while hasattr(root, name):
        name += "_"
    return name


def _code_dtype(qmin, qmax):
    return torch.int8 if qmin < 0 else torch.uint8
