"""Tests of minicompress.quantization.qat_ste: straight-through QAT pinned to torch.ao's
moving-average observer and fused fake-quant ops; BatchNorm folded during training pinned to
the plain Conv -> BatchNorm computation."""

import copy
import warnings

import pytest
import torch
from torch import nn

from minicompress.quantization import (
    ActQuant,
    ConvBN,
    EMAActQuant,
    FakeQuantWeight,
    FixedRangeActQuant,
    STEWeight,
    fold_batchnorm,
)

with (
    warnings.catch_warnings()
):  # torch.ao.quantization is deprecated but still the reference
    warnings.simplefilter("ignore")
    tq = pytest.importorskip("torch.ao.quantization")


def test_ema_range_and_fake_quantization_equal_torch_ao():
    # torch.ao's MovingAverageMinMaxObserver (first batch sets the range, then an EMA with
    # c = 0.01) feeding torch.fake_quantize_per_tensor_affine is the reference QAT
    # activation of Jacob et al. 2018: values and the clipped straight-through gradient.
    torch.manual_seed(0)
    batches = [torch.randn(8, 5) * (1 + i) + i for i in range(4)]
    ours = EMAActQuant(bits=4)
    observer = tq.MovingAverageMinMaxObserver(
        averaging_constant=0.01, quant_min=0, quant_max=15
    )
    for i, x in enumerate(batches):
        observer(x)
        x = x.clone().requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y = ours(x)
        if i == 0:
            assert torch.equal(y, x)  # the first batch initializes and passes through
            continue
        scale, zero_point = observer.calculate_qparams()
        y_ref = torch.fake_quantize_per_tensor_affine(
            x_ref, float(scale), int(zero_point), 0, 15
        )
        torch.testing.assert_close(ours.min_val, observer.min_val)
        torch.testing.assert_close(ours.max_val, observer.max_val)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
        y.backward(torch.arange(40.0).view(8, 5))
        y_ref.backward(torch.arange(40.0).view(8, 5))
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_the_range_moves_only_in_training_mode_and_not_at_all_when_fixed():
    act = EMAActQuant(bits=8, averaging_constant=0.5)
    act(torch.tensor([0.0, 2.0]))
    act.eval()
    act(torch.tensor([-10.0, 10.0]))
    assert (act.min_val.item(), act.max_val.item()) == (0.0, 2.0)
    act.train()
    act(torch.tensor([-2.0, 4.0]))  # range + 0.5·(batch − range)
    assert (act.min_val.item(), act.max_val.item()) == (-1.0, 3.0)
    fixed = FixedRangeActQuant(bits=8)
    fixed(torch.tensor([0.0, 2.0]))
    fixed(torch.tensor([-5.0, 9.0]))
    assert (fixed.min_val.item(), fixed.max_val.item()) == (0.0, 2.0)


def test_exported_ema_quantizer_is_the_frozen_actquant_of_its_range():
    act = EMAActQuant(bits=4)
    act(torch.tensor([-1.0, 3.0]))
    frozen = act.export()
    assert isinstance(frozen, ActQuant) and frozen.observer is None
    x = torch.linspace(-2, 4, 50)
    act.eval()
    torch.testing.assert_close(frozen(x), act(x), rtol=0, atol=0)


def test_ste_weight_is_torchs_per_channel_symmetric_fake_quantization():
    torch.manual_seed(1)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    weight_ref = weight.detach().clone().requires_grad_()
    observer = tq.PerChannelMinMaxObserver(
        ch_axis=0,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        quant_min=-8,
        quant_max=7,
    )
    observer(weight_ref.detach())
    scale, zero_point = observer.calculate_qparams()
    theirs = torch.fake_quantize_per_channel_affine(
        weight_ref, scale, zero_point.int(), 0, -8, 7
    )
    ours = STEWeight(bits=4, axis=0)(weight)
    upstream = torch.randn(4, 3, 3, 3)
    ours.backward(upstream)
    theirs.backward(upstream)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=0, atol=0)
    stored, quant = STEWeight(bits=4, axis=0).export(weight)
    assert type(quant) is FakeQuantWeight and torch.equal(quant(stored), ours.detach())


def conv_bn(affine=True, bias=False):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, bias=bias)
    bn = nn.BatchNorm2d(3, affine=affine)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    if affine:
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return conv, bn


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_convbn_in_training_is_conv_then_batchnorm_with_batch_statistics(affine, bias):
    # Without a quantizer, conv(x, W·f)/f + b is conv(x, W) + b: the layer computes exactly
    # what Conv -> BatchNorm computes in training mode, running statistics included.
    conv, bn = conv_bn(affine, bias)
    reference = nn.Sequential(conv, bn).train()
    folded = ConvBN(*copy.deepcopy(reference)).train()
    x = torch.randn(6, 2, 7, 7)
    torch.testing.assert_close(folded(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded.bn.running_mean, bn.running_mean)
    torch.testing.assert_close(folded.bn.running_var, bn.running_var)


def test_convbn_in_eval_mode_is_the_folded_convolution():
    conv, bn = conv_bn()
    reference = nn.Sequential(conv, bn).eval()
    folded = ConvBN(conv, bn).eval()
    x = torch.randn(4, 2, 6, 6)
    torch.testing.assert_close(
        folded(x), fold_batchnorm(reference)(x), rtol=1e-5, atol=1e-5
    )


def test_convbn_quantizes_the_weight_folded_with_the_running_sigma():
    conv, bn = conv_bn()
    layer = ConvBN(conv, bn)
    seen = []

    class Record(nn.Module):
        def forward(self, w):
            seen.append(w.detach().clone())
            return w

    layer.weight_quant = Record()
    factor = bn.weight / torch.sqrt(
        bn.running_var + bn.eps
    )  # before this batch updates it
    expected = conv.weight * factor.reshape(-1, 1, 1, 1)
    layer.train()(torch.randn(5, 2, 6, 6))
    torch.testing.assert_close(seen[0], expected.detach(), rtol=1e-5, atol=1e-6)


def test_after_freeze_the_running_statistics_stop_and_replace_the_batch_ones():
    conv, bn = conv_bn()
    layer = ConvBN(conv, bn, freeze_bn_after=2).train()
    x = torch.randn(5, 2, 6, 6) + 1
    layer(x)
    layer(x)  # two training steps: statistics move
    mean = bn.running_mean.clone()
    assert layer.bn_frozen and int(layer.steps) == 2
    out = layer(x)
    assert torch.equal(bn.running_mean, mean)
    torch.testing.assert_close(
        out, layer.eval()(x)
    )  # the folded layer, in training too
