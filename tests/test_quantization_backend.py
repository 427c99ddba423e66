"""Tests of minicompress.quantization.backend: our calibrated model on torch's int8 kernels."""

import pytest
import torch
from torch import nn

from minicompress import measure, models
from minicompress.quantization import quantize_ptq
from minicompress.quantization.backend import Int8Conv2d, Int8Linear, Int8Quantize, to_backend
from minicompress.quantization.integer import IntegerLinear, to_integer

from test_quantization_integer import assert_unchanged, images, layer_inputs, lenet5, mlp, snapshot


@pytest.fixture(autouse=True)
def _x86_engine():
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch has no x86 quantized engine here")


@pytest.mark.parametrize("build", [lenet5, mlp])
def test_backend_predicts_as_the_fake_quantized_model(build):
    fq = quantize_ptq(build(), images())
    int8 = to_backend(fq)
    x = images(1, 64, seed=9)[0][0]
    with torch.no_grad():
        y_fq, y_int8 = fq(x), int8(x)
    step = float(y_fq.max() - y_fq.min()) / 255
    assert float((y_int8 - y_fq).abs().max()) <= 2 * step
    assert float((y_int8.argmax(1) == y_fq.argmax(1)).float().mean()) >= 0.98


def test_kernel_codes_match_the_plain_pytorch_integer_pipeline():
    # The reference: `to_integer`'s requantization, written out in integers. torch's kernel
    # rescales in float, so a code may differ by one where the value sits on a rounding tie.
    fq = quantize_ptq(mlp(), images())
    int8, integer = to_backend(fq), to_integer(fq)
    x = images(1, 32, seed=4)[0][0]
    kernel_inputs, _ = layer_inputs(int8, x, (Int8Linear,))
    integer_inputs, _ = layer_inputs(integer, x, (IntegerLinear,))
    q_kernel = kernel_inputs["features.2"].int_repr().int()
    q_integer = integer_inputs["features.2"].int()
    assert int((q_kernel - q_integer).abs().max()) <= 1
    assert float((q_kernel == q_integer).float().mean()) >= 0.99


def test_relu_is_fused_into_the_kernel_and_logits_stay_float():
    int8 = to_backend(quantize_ptq(lenet5(), images(2)))
    assert int8.conv1.relu and int8.fc1.relu and not int8.fc3.relu
    assert int8.conv1.out_scale is not None and int8.fc3.out_scale is None
    assert isinstance(int8.conv2, Int8Conv2d) and isinstance(int8.x_quant, Int8Quantize)
    assert int8(images(1, 2)[0][0]).dtype == torch.float32


def test_signed_symmetric_activations_run_as_shifted_unsigned_codes():
    fq = quantize_ptq(mlp(), images(), act_symmetric=True)
    int8 = to_backend(fq)
    assert int8.flatten_quant.zero_point == 128
    x = images(1, 32, seed=9)[0][0]
    with torch.no_grad():
        assert torch.equal(int8(x).argmax(1), fq(x).argmax(1))


def test_state_dict_round_trips_into_a_fresh_backend_model():
    int8 = to_backend(quantize_ptq(mlp(0), images()))
    other = to_backend(quantize_ptq(mlp(1), images()))
    other.load_state_dict(int8.state_dict())
    x = images(1, 8, seed=2)[0][0]
    assert torch.equal(other(x), int8(x))


def test_serialized_backend_model_is_about_four_times_smaller():
    net = models.build("lenet300", hidden=(256, 256)).eval()
    int8 = to_backend(quantize_ptq(net, images(2)))
    ratio = measure.size_bytes(net) / measure.size_bytes(int8)
    assert 3.9 <= ratio < 4.0  # int8 codes + per-channel scales and float biases


def test_four_bit_model_is_refused_and_unchanged():
    fq = quantize_ptq(mlp(), images(2), weight_bits=4)
    before = snapshot(fq)
    with pytest.raises(ValueError, match="8-bit signed codes only"):
        to_backend(fq)
    assert_unchanged(fq, before)
    with pytest.raises(ValueError, match="8-bit codes only"):
        to_backend(quantize_ptq(mlp(), images(2), act_bits=4))


def test_uncalibrated_and_plain_models_are_refused():
    with pytest.raises(TypeError, match="calibrated model from quantize_ptq"):
        to_backend(mlp())
    with pytest.raises(ValueError, match="not calibrated"):
        to_backend(torch.fx.symbolic_trace(mlp()))


def test_conv1d_is_refused():
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 6, 2))
    fq = quantize_ptq(net, [torch.rand(4, 2, 8)])
    with pytest.raises(ValueError, match="runs Linear and Conv2d"):
        to_backend(fq)


@pytest.mark.parametrize("build", [lenet5, mlp])
def test_int8_kernels_count_the_macs_of_the_float_layers(build):
    # torch's flop counter has no formula for torch.ops.quantized; the int8 model does the same
    # multiply-accumulates as the float model, which torch's own conv and matmul formulas count.
    float_model = build()
    x = images(1, 4)[0][0]
    assert measure.macs(to_backend(quantize_ptq(float_model, images())), x) == measure.macs(float_model, x) > 0


def test_study_row_runs_the_int8_backend_model():
    from minicompress import study

    rows = study.run_study(["int8_backend"], dataset="digits", model="lenet300", epochs=2, progress=False)
    base, int8 = rows
    assert int8["name"] == "int8_backend" and int8["params"] == base["params"]
    assert abs(int8["accuracy"] - base["accuracy"]) <= 0.02
    assert base["size_bytes"] / int8["size_bytes"] >= 3.5


def test_measure_stores_the_activation_grids_as_plain_numbers():
    int8 = to_backend(quantize_ptq(mlp(), images(2)))
    state = measure.effective_state_dict(int8)
    grid = state["features.0._extra_state"]
    assert grid["out_scale"] == int8.get_submodule("features.0").out_scale and isinstance(grid["out_zero_point"], int)
    assert state["features.0.weight"].dtype == torch.int8 and "flatten_quant._extra_state" in state
