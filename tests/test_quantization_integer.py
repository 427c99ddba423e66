"""Tests of minicompress.quantization.integer: integer-only inference (Jacob et al. 2018)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minicompress import models
from minicompress.pruning import prune_unstructured
from minicompress.quantization import quantize_dynamic, quantize_ptq
from minicompress.quantization.integer import (
    INT32_MAX,
    IntegerConv,
    IntegerLinear,
    accumulator_bound,
    im2col,
    integer_matmul,
    integer_plan,
    quantize_multiplier,
    requantize,
    rounding_doubling_high_mul,
    rounding_right_shift,
    to_integer,
)


def images(n=4, batch=16, seed=0, size=28):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, 1, size, size, generator=gen), torch.zeros(batch)) for _ in range(n)]


def lenet5(seed=0):
    torch.manual_seed(seed)
    return models.build("lenet5").eval()


def mlp(seed=0):
    torch.manual_seed(seed)
    return models.build("lenet300", hidden=(64, 32)).eval()


def layer_inputs(model, x, kinds):
    """{layer name: the tensor it reads} for the layers of `kinds`, and the output."""
    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0]))
        for n, m in model.named_modules()
        if isinstance(m, kinds)
    ]
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    return seen, y


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.code


def assert_unchanged(model, before):
    state, code = before
    assert model.code == code
    for k, v in state.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


# --- the arithmetic, against hand-worked literals --------------------------------------------


def test_multiplier_and_shift_match_hand_worked_literals():
    # TFLite's QuantizeMultiplier by hand: frexp, then round(mantissa · 2^31).
    M = torch.tensor([0.75, 0.1, 2**-10, 1.5, 1 - 2**-40], dtype=torch.float64)
    m0, n = quantize_multiplier(M)
    # 0.1 = 0.8 · 2^-3, round(0.8 · 2^31) = round(1717986918.4); 1 - 2^-40 rounds up to 2^31: 0.5 · 2^1
    assert m0.tolist() == [1610612736, 1717986918, 1073741824, 1610612736, 1073741824]
    assert n.tolist() == [0, 3, 9, -1, -1]
    assert bool(((m0 >= 2**30) & (m0 < 2**31)).all())  # M0 in [0.5, 1)


def test_multiplier_reproduces_m_to_31_bits():
    M = torch.logspace(-12, 1, 200, dtype=torch.float64)
    m0, n = quantize_multiplier(M)
    back = m0.double() * 2.0 ** (-31 - n.double())
    torch.testing.assert_close(back, M, rtol=2**-31, atol=0)


def test_doubling_high_mul_matches_gemmlowp_literals():
    # gemmlowp: (a·b + nudge) / 2^31 truncated, nudge = 2^30 or 1 − 2^30: ties go up.
    a = torch.tensor([2**30, -5, 5, 1000, -1000])
    got = rounding_doubling_high_mul(a, torch.tensor(2**30))  # b = 2^30 is 0.5 in Q31
    assert got.tolist() == [2**29, -2, 3, 500, -500]


def test_rounding_right_shift_matches_gemmlowp_literals():
    # RoundingDivideByPOT: round to nearest, ties away from zero.
    x = torch.tensor([5, -5, 6, -6, 7, -7, 4, 0])
    n = torch.tensor([1, 1, 2, 2, 2, 2, 2, 3])
    assert rounding_right_shift(x, n).tolist() == [3, -3, 2, -2, 2, -2, 1, 0]


def test_requantize_scales_clamps_and_adds_the_zero_point():
    m0, n = quantize_multiplier(torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64))
    got = requantize(torch.tensor([[1000, -1000, 5000]]), m0, n, 3, 0, 255)
    assert got.tolist() == [[103, 0, 255]]  # 100 + 3; −100 + 3 clamps to 0; 503 clamps to 255


def test_integer_matmul_equals_the_product_of_offset_codes():
    gen = torch.Generator().manual_seed(0)
    q1 = torch.randint(0, 256, (5, 7), generator=gen, dtype=torch.uint8)
    q2 = torch.randint(-128, 128, (3, 7), generator=gen, dtype=torch.int8)
    z2 = torch.tensor([0, 2, -3], dtype=torch.int32)
    q_bias = torch.tensor([10, -20, 30], dtype=torch.int32)
    got = integer_matmul(q1, 17, q2, z2, q_bias)
    expected = (q1.long() - 17) @ (q2.long() - z2.long()[:, None]).T + q_bias.long()  # int64 oracle
    assert got.dtype == torch.int32 and torch.equal(got.long(), expected)


def test_integer_conv_accumulators_equal_torch_conv_of_offset_codes():
    # The oracle: F.conv2d in float64 on q1 − Z1 (zero padding of real zero), exact for small ints.
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    q1 = torch.randint(0, 256, (2, 4, 7, 7), generator=gen, dtype=torch.uint8)
    q2 = torch.randint(-128, 128, (6, 2, 3, 3), generator=gen, dtype=torch.int8)
    integer = IntegerConv(conv, q2, torch.ones(6), torch.zeros(6, dtype=torch.int32), None, (torch.tensor(1.0), torch.tensor(9)), None)
    got = integer(q1)  # float output: acc · S1 · S2 = acc with unit scales
    expected = F.conv2d(q1.double() - 9, q2.double(), None, 2, 1, 1, 2)
    assert torch.equal(got.double(), expected)


def test_im2col_pads_with_the_zero_point_code():
    q = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    rows, shape = im2col(q, (3, 3), (1, 1), (1, 1), (1, 1), pad_code=7)
    assert shape == (1, 2, 2) and rows.shape == (4, 9)
    assert int((rows == 7).sum()) == 4 * 9 - 4 * 4  # each 3x3 window holds the 4 real codes


def test_accumulator_bound_for_the_widest_layer_used_fits_int32():
    # 784-1024-1024 MLP: K = 1024 products of uint8 (z up to 255) and int8 codes.
    bound = accumulator_bound(1024, (0, 255), (-128, 127), 255, 0, torch.tensor([2**20]))
    assert bound == 1024 * 255 * 128 * 2 + 2**20 and bound < INT32_MAX
    assert accumulator_bound(70_000, (0, 255), (-128, 127), 0, 0, torch.tensor([0])) > INT32_MAX


# --- the whole model ----------------------------------------------------------------------


@pytest.mark.parametrize("build", [lenet5, mlp])
def test_integer_model_matches_fake_quant_within_one_step(build):
    data = images()
    fq = quantize_ptq(build(), data)
    integer = to_integer(fq)
    x = images(1, 64, seed=9)[0][0]
    codes, y_int = layer_inputs(integer, x, (IntegerLinear,))
    values, y_fq = layer_inputs(fq, x, (nn.Linear, nn.Conv2d))
    plan = integer_plan(fq)
    for layer_plan in plan["layers"].values():  # every quantized layer's input codes
        act = plan["acts"][layer_plan["input"]]
        expected = torch.round(values[layer_plan["module"]] / act.scale) + act.zero_point
        got = codes[layer_plan["module"]]
        assert got.dtype == torch.uint8
        assert int((got.int() - expected.int()).abs().max()) <= 1
    step = (y_fq.max() - y_fq.min()) / 255  # the logits' step on an 8-bit grid
    assert float((y_int - y_fq).abs().max()) <= float(step)
    assert torch.equal(y_int.argmax(1), y_fq.argmax(1))


def test_integer_model_keeps_relu_pool_and_flatten_on_codes():
    integer = to_integer(quantize_ptq(lenet5(), images(2)))
    code = integer.code
    assert code.count("_quant(") == 1  # one float -> codes step, at the input
    assert "relu_codes" in code and "IntegerLinear" in repr(integer.fc1)


def test_residual_adds_stay_float_and_convolutions_run_in_integers():
    torch.manual_seed(0)
    net = models.build("resnet8").eval()
    fq = quantize_ptq(net, images(2, 8, size=12))
    integer = to_integer(fq)
    plan = integer_plan(fq)
    assert any(p["output"] is None for p in plan["layers"].values())  # conv -> float add
    assert any(p["output"] is not None for p in plan["layers"].values())  # conv -> relu -> conv
    x = images(1, 8, seed=3, size=12)[0][0]
    with torch.no_grad():
        torch.testing.assert_close(integer(x), fq(x), rtol=0, atol=0.05 * float(fq(x).abs().max()))


def test_pruned_channel_with_a_bias_fits_int32():
    net = mlp()
    with torch.no_grad():
        net.features[0].weight[3] = 0  # a pruned output channel, bias kept
        net.features[0].bias[3] = 0.5
    integer = to_integer(quantize_ptq(net, images(2)))
    assert abs(int(integer.get_submodule("features.0").bias[3])) < INT32_MAX


def test_masked_weights_are_quantized_after_the_mask():
    net = mlp()
    prune_unstructured(net, 0.5)
    fq = quantize_ptq(net, images(2))
    layer = to_integer(fq).get_submodule("features.0")
    assert float((layer.weight == 0).float().mean()) >= 0.5


def test_accumulator_that_could_overflow_is_refused():
    net = nn.Sequential(nn.Linear(70_000, 1))
    fq = quantize_ptq(net, [torch.rand(2, 70_000)])
    before = snapshot(fq)
    with pytest.raises(ValueError, match="int32 accumulator could reach"):
        to_integer(fq)
    assert_unchanged(fq, before)


def test_model_that_is_not_from_quantize_ptq_is_refused():
    with pytest.raises(TypeError, match="calibrated model from quantize_ptq"):
        to_integer(mlp())
    traced = torch.fx.symbolic_trace(mlp())
    with pytest.raises(ValueError, match="was not calibrated"):
        to_integer(traced)


def test_uncalibrated_quantizer_is_refused_and_model_unchanged():
    fq = quantize_ptq(mlp(), images(2))
    fq.flatten_quant.quantizing = False
    before = snapshot(fq)
    with pytest.raises(ValueError, match="not calibrated"):
        to_integer(fq)
    assert_unchanged(fq, before) and not fq.flatten_quant.quantizing


def test_dynamic_model_is_refused():
    with pytest.raises(ValueError, match="dynamically"):
        to_integer(quantize_dynamic(mlp()))


def test_more_than_eight_bits_is_refused_and_model_unchanged():
    fq = quantize_ptq(mlp(), images(2), act_bits=10)
    before = snapshot(fq)
    with pytest.raises(ValueError, match="8 bits at most"):
        to_integer(fq)
    assert_unchanged(fq, before)
    with pytest.raises(ValueError, match="8 bits at most"):
        to_integer(quantize_ptq(mlp(), images(2), weight_bits=12))


def test_four_bit_model_runs_in_integers_on_its_own_grid():
    fq = quantize_ptq(mlp(), images(2), weight_bits=4, act_bits=4)
    integer = to_integer(fq)
    x = images(1, 16, seed=5)[0][0]
    codes, _ = layer_inputs(integer, x, (IntegerLinear,))
    assert int(codes["features.2"].max()) <= 15 and int(integer.get_submodule("features.0").weight.abs().max()) <= 8


def test_caller_model_is_not_changed():
    fq = quantize_ptq(lenet5(), images(2))
    before = snapshot(fq)
    to_integer(copy.deepcopy(fq))
    to_integer(fq)
    assert_unchanged(fq, before)


@pytest.mark.parametrize("module_name", ["integer", "backend", "export"])
def test_module_names_are_exported_listed_and_examples_run(module_name):
    import doctest
    import importlib
    import re

    from minicompress import quantization

    module = importlib.import_module(f"minicompress.quantization.{module_name}")
    listed = set(re.findall(r"\b\w+\b", quantization.__doc__.split(f"    {module_name} ", 1)[1]))
    for name in module.__all__:
        assert name in listed and getattr(quantization, name) is getattr(module, name), name
    failed, attempted = doctest.testmod(module, extraglobs={"torch": torch})
    assert failed == 0 and (attempted > 0 or module_name == "export")
