"""Tests of minicompress.quantization.export: ONNX files (float, pruned, QDQ int8) in onnxruntime."""

import os
import sys

import pytest
import torch

from minicompress.pruning import prune_unstructured
from minicompress.quantization import quantize_ptq
from minicompress.quantization.export import OnnxModel, export_onnx

from test_quantization_integer import assert_unchanged, images, lenet5, mlp, snapshot

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_float_model_runs_in_onnxruntime_with_the_same_outputs(tmp_path):
    net = lenet5()
    x = images(1, 8)[0][0]
    path = export_onnx(net, tmp_path / "lenet5.onnx", x[:2])  # any batch size runs afterwards
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(path)(x), net(x), rtol=1e-4, atol=1e-4)


def test_pruned_model_is_written_with_its_effective_weights(tmp_path):
    net = mlp()
    prune_unstructured(net, 0.8)
    x = images(1, 8)[0][0]
    path = export_onnx(net, tmp_path / "pruned.onnx", x)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    assert (weights["features.0.weight"] == 0).mean() >= 0.8  # zeros stored dense: no smaller
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(path)(x), net(x), rtol=1e-4, atol=1e-4)


def test_int8_file_holds_int8_weights_our_scales_and_the_same_predictions(tmp_path):
    net = lenet5()
    fq = quantize_ptq(net, images())
    x = images(1, 32, seed=7)[0][0]
    path = export_onnx(fq, tmp_path / "int8.onnx", x)
    graph = onnx.load(path).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert inits["conv1.weight_quantized"].dtype.name == "int8"
    assert inits["fc1.bias_quantized"].dtype.name == "int32"
    chain = fq.conv1.parametrizations.weight
    scale, _ = chain[0].qparams(chain.original)  # our FakeQuantWeight's per-channel scales
    assert torch.equal(torch.tensor(inits["conv1.weight_scale"]), scale)
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 5 and "Conv" in ops
    with torch.no_grad():
        y_fq, y_onnx = fq(x), OnnxModel(path)(x)
    step = float(y_fq.max() - y_fq.min()) / 255
    assert float((y_onnx - y_fq).abs().max()) <= 2 * step
    assert torch.equal(y_onnx.argmax(1), y_fq.argmax(1))


def test_int8_file_is_near_four_times_smaller(tmp_path):
    net = mlp()
    x = images(1, 4)[0][0]
    fp32 = export_onnx(net, tmp_path / "fp32.onnx", x)
    int8 = export_onnx(quantize_ptq(net, images(2)), tmp_path / "int8.onnx", x)
    assert 3.5 <= os.path.getsize(fp32) / os.path.getsize(int8) < 4.0


def test_missing_directory_and_bad_path_are_refused(tmp_path):
    net = mlp()
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(net, tmp_path / "missing" / "m.onnx", images(1, 2)[0][0])
    with pytest.raises(TypeError, match="path must be"):
        export_onnx(net, 3, images(1, 2)[0][0])
    with pytest.raises(ValueError, match="is a directory"):
        export_onnx(net, tmp_path, images(1, 2)[0][0])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            export_onnx(mlp(), tmp_path / "m.onnx", images(1, 2)[0][0])
    finally:
        tmp_path.chmod(0o700)


def test_four_bit_model_is_refused_and_unchanged(tmp_path):
    fq = quantize_ptq(mlp(), images(2), weight_bits=4)
    before = snapshot(fq)
    with pytest.raises(ValueError, match="weight_bits=8"):
        export_onnx(fq, tmp_path / "m.onnx", images(1, 2)[0][0])
    assert_unchanged(fq, before)
    assert not (tmp_path / "m.onnx").exists()


def test_example_input_the_model_refuses_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not fit the model"):
        export_onnx(mlp(), tmp_path / "m.onnx", torch.zeros(2, 3, 5, 5))


def test_missing_onnx_is_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        export_onnx(mlp(), tmp_path / "m.onnx", images(1, 2)[0][0])
