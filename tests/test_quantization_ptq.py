"""Tests of minicompress.quantization.ptq: whole-model weight-only, dynamic and static PTQ."""

import functools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils import parametrize

from minicompress.pruning import apply_mask
from minicompress.quantization import (
    DynamicActQuant,
    FakeQuantWeight,
    PercentileObserver,
    activation_quantizers,
    calibrate,
    fold_batchnorm,
    quantizable_layers,
    quantize_dynamic,
    quantize_ptq,
    quantize_weights,
)

with (
    warnings.catch_warnings()
):  # torch.ao.quantization is deprecated but still the reference
    warnings.simplefilter("ignore")
    tq = pytest.importorskip("torch.ao.quantization")


def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2)
    return model.eval()


def loader(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 8, 8, generator=gen), torch.zeros(4)) for _ in range(n)]


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        type(model),
        model.training,
    )


def assert_unchanged(model, before):
    state, cls, training = before
    assert type(model) is cls and model.training == training
    assert model.state_dict().keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(
            model.state_dict()[k], v, rtol=0, atol=0, equal_nan=True
        )
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def torch_observed(tensors, **settings):
    """torch.ao's qparams for a stream of tensors, and a fake quantizer using them."""
    observer = tq.MinMaxObserver(**settings)
    for t in tensors:
        observer(t)
    scale, zero_point = observer.calculate_qparams()
    return lambda x: torch.fake_quantize_per_tensor_affine(
        x, float(scale), int(zero_point), observer.quant_min, observer.quant_max
    )


def torch_weight(weight):
    """torch.ao's default weight fake quantization: per-channel symmetric qint8."""
    observer = tq.PerChannelMinMaxObserver(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric
    )
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(
        weight, scale, zero_point.int(), 0, -128, 127
    )


def test_static_ptq_equals_the_pipeline_built_from_torchs_ops():
    model, batches = conv_net(), loader()
    before = snapshot(model)
    quantized = quantize_ptq(model, batches)
    assert_unchanged(model, before)
    # the reference: fold BN, observe the float activations each layer reads with torch's
    # MinMaxObserver (quint8), fake-quantize them and the weights with torch's ops
    folded = fold_batchnorm(model)
    conv, linear = folded.get_submodule("0"), folded.get_submodule("4")
    inputs = [x for x, _ in batches]
    hidden = [torch.flatten(F.relu(conv(x)), 1).detach() for x in inputs]
    quant_in, quant_hidden = torch_observed(inputs), torch_observed(hidden)
    x = torch.randn(2, 1, 8, 8)
    h = F.relu(F.conv2d(quant_in(x), torch_weight(conv.weight.detach()), conv.bias))
    expected = F.linear(
        quant_hidden(torch.flatten(h, 1)),
        torch_weight(linear.weight.detach()),
        linear.bias,
    )
    with torch.no_grad():
        torch.testing.assert_close(quantized(x), expected, rtol=0, atol=1e-6)
    assert len(activation_quantizers(quantized)) == 2 and not quantized.training


def test_weight_only_ptq_quantizes_weights_and_nothing_else():
    model = conv_net()
    before = snapshot(model)
    quantized = quantize_weights(model, bits=8)
    assert_unchanged(model, before)
    assert type(quantized) is nn.Sequential and not activation_quantizers(quantized)
    torch.testing.assert_close(
        quantized[4].weight, torch_weight(model[4].weight.detach()), rtol=0, atol=0
    )
    assert isinstance(
        quantized[1], nn.BatchNorm2d
    )  # no folding without an integer kernel


def test_dynamic_ptq_quantizes_each_batch_with_its_own_range():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    quantized = quantize_dynamic(model)
    x = torch.randn(5, 6)
    first = torch_observed([x])(x)
    hidden = F.relu(
        F.linear(first, torch_weight(model[0].weight.detach()), model[0].bias)
    )
    expected = F.linear(
        torch_observed([hidden])(hidden),
        torch_weight(model[2].weight.detach()),
        model[2].bias,
    )
    with torch.no_grad():
        torch.testing.assert_close(quantized(x), expected, rtol=0, atol=1e-6)
    assert all(
        isinstance(q, DynamicActQuant)
        for q in activation_quantizers(quantized).values()
    )


@pytest.mark.parametrize(
    "observer", ["minmax", "moving_average", "percentile", "mse", "entropy"]
)
def test_every_observer_calibrates_a_model(observer):
    model = conv_net()
    quantized = quantize_ptq(
        model, loader(), observer=observer, act_bits=6, weight_bits=4
    )
    acts = activation_quantizers(quantized)
    assert all(
        a.quantizing and a.observer is None and float(a.scale) > 0
        for a in acts.values()
    )
    x = loader(1, seed=5)[0][0]
    with torch.no_grad():
        error = (quantized(x) - model(x)).abs().max() / model(x).abs().max()
    assert float(error) < 0.3


def test_options_reach_the_quantizers():
    model = conv_net()
    quantized = quantize_ptq(
        model,
        loader(),
        weight_bits=4,
        act_bits=4,
        per_channel=False,
        act_symmetric=True,
        observer=functools.partial(PercentileObserver, percentile=99.0),
        fold_bn=False,
        keep_observers=True,
        batches=2,
        exclude="4",
    )
    weight_quant = quantized.get_submodule("0").parametrizations.weight[0]
    assert (weight_quant.bits, weight_quant.axis) == (4, None)
    assert isinstance(quantized.get_submodule("1"), nn.BatchNorm2d)  # not folded
    assert not parametrize.is_parametrized(quantized.get_submodule("4"))  # excluded
    (act,) = activation_quantizers(quantized).values()  # only the conv's input remains
    assert (
        isinstance(act.observer, PercentileObserver) and act.observer.percentile == 99.0
    )
    assert (act.qmin, act.qmax) == (-8, 7) and int(act.zero_point) == 0
    assert (
        float(act.observer.histogram.counts.sum()) == 2 * 4 * 64
    )  # 2 batches of 4 images


def test_a_pruned_model_stays_pruned_after_ptq():
    model = conv_net()
    mask = torch.rand(5, 144, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_mask(model[4], mask)
    quantized = quantize_ptq(model, loader())
    linear = quantized.get_submodule("4")
    assert [type(p).__name__ for p in linear.parametrizations.weight] == [
        "Mask",
        "FakeQuantWeight",
    ]
    assert bool((linear.weight[~mask] == 0).all())


def test_torchvision_resnet18_and_mobilenet_v2_quantize():
    for build in (torchvision.models.resnet18, torchvision.models.mobilenet_v2):
        model = build(num_classes=10).eval()
        batches = [torch.randn(1, 3, 32, 32)]
        quantized = quantize_ptq(model, batches)
        layers = quantizable_layers(model)
        quantized_layers = [
            n
            for n, m in quantized.named_modules()
            if parametrize.is_parametrized(m, "weight")
            and isinstance(m.parametrizations.weight[0], FakeQuantWeight)
        ]
        assert sorted(quantized_layers) == sorted(layers)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in quantized.modules())
        with torch.no_grad():
            out, ref = quantized(batches[0]), model(batches[0])
        assert out.shape == ref.shape == (1, 10) and bool(torch.isfinite(out).all())


def test_calibrate_counts_batches_and_restores_the_mode():
    model = conv_net().train()
    assert calibrate(model, loader(5), batches=2) == 2 and model.training
    with pytest.raises(ValueError, match="the calibration loader yielded no batches"):
        calibrate(model, [])


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return (
            self.fc(x) if x.sum() > 0 else x
        )  # a data-dependent branch: not traceable


def nan_weight_net():
    model = conv_net()
    model[4].weight.data[0, 0] = math.nan
    return model


@pytest.mark.parametrize(
    "make,kwargs,error,match",
    [
        (
            conv_net,
            {"calibration_loader": []},
            ValueError,
            "calibration_loader yielded no batches",
        ),
        (
            conv_net,
            {"calibration_loader": iter(loader())},
            TypeError,
            "must be re-iterable",
        ),
        (
            conv_net,
            {"calibration_loader": 3},
            TypeError,
            "calibration_loader must be an iterable",
        ),
        (
            lambda: nn.Sequential(nn.ReLU()),
            {},
            ValueError,
            "Sequential has nothing to quantize",
        ),
        (conv_net, {"weight_bits": 1}, ValueError, r"\[2, 16\] for signed symmetric"),
        (
            conv_net,
            {"act_bits": 17},
            ValueError,
            r"bits must be an int in \[1, 16\], got 17",
        ),
        (conv_net, {"per_channel": 1}, TypeError, "per_channel must be True or False"),
        (
            conv_net,
            {"observer": "kl"},
            ValueError,
            "observer must be one of 'minmax', ",
        ),
        (
            conv_net,
            {"observer": nn.ReLU},
            TypeError,
            "calling it failed: ReLU.__init__",
        ),
        (
            conv_net,
            {"observer": lambda **kw: nn.ReLU()},
            TypeError,
            "observer must make an Observer",
        ),
        (conv_net, {"batches": 0}, ValueError, "batches must be an int >= 1"),
        (
            conv_net,
            {"exclude": "fc"},
            ValueError,
            r"exclude names \['fc'\], not quantizable",
        ),
        (conv_net, {"exclude": ["0", "4"]}, ValueError, "leaves nothing to quantize"),
        (nan_weight_net, {}, ValueError, "weight of layer '4' holds 1 NaN"),
        (
            Branchy,
            {"calibration_loader": [torch.randn(1, 4)]},
            ValueError,
            "could not trace Branchy",
        ),
        (
            conv_net,
            {"calibration_loader": [torch.full((1, 1, 8, 8), math.inf)]},
            ValueError,
            "activation '.*': the observed tensor holds 64 NaN or infinite",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_the_model_as_it_was(
    make, kwargs, error, match
):
    model = make()
    before = snapshot(model)
    kwargs = {"calibration_loader": loader(), **kwargs}
    with pytest.raises(error, match=match):
        quantize_ptq(model, **kwargs)
    assert_unchanged(model, before)


def test_weight_only_and_dynamic_reject_bad_input_without_changing_the_model():
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        quantize_weights(model, bits=0)
    with pytest.raises(TypeError, match="symmetric must be True or False"):
        quantize_weights(model, symmetric="yes")
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 40"):
        quantize_dynamic(model, act_bits=40)
    with pytest.raises(ValueError, match="could not trace Branchy"):
        quantize_dynamic(Branchy())
    with pytest.raises(ValueError, match="is already fake-quantized"):
        quantize_weights(quantize_weights(model))
    assert_unchanged(model, before)
