"""Tests of minicompress.quantization.qat: prepare_qat wires the methods in, convert hands
over the model quantize_ptq would give, and bad input leaves the caller's model unchanged."""

import copy

import pytest
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from minicompress import measure
from minicompress.pruning import apply_mask
from minicompress.quantization import (
    QAT_METHODS,
    ActQuant,
    ConvBN,
    FakeQuantWeight,
    LSQPlusActQuant,
    activation_quantizers,
    convert,
    prepare_qat,
    qat_quantizers,
    quantize_ptq,
)

METHODS = list(QAT_METHODS)


def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2)
    return model.eval()


def loader(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(8, 1, 8, 8, generator=gen),
            torch.randint(0, 5, (8,), generator=gen),
        )
        for _ in range(n)
    ]


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        type(model),
        model.training,
    )


def assert_unchanged(model, before):
    state, kind, training = before
    after = model.state_dict()
    assert type(model) is kind and model.training == training
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), key


def train_steps(model, steps=3, lr=0.01):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for x, y in loader(steps, seed=1):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("method", METHODS)
def test_prepare_qat_quantizes_what_quantize_ptq_quantizes(method):
    model = conv_net()
    qat = prepare_qat(model, method, 4, 4, loader())
    ptq = quantize_ptq(model, loader(), 4, 4)
    weight_act = QAT_METHODS[method]
    assert isinstance(qat, fx.GraphModule) and qat.training
    acts = {n for n, m in qat.named_modules() if isinstance(m, weight_act[1])}
    assert acts == set(activation_quantizers(ptq))
    assert isinstance(
        qat.get_submodule("0"), ConvBN
    )  # Conv -> BatchNorm trained folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qat.children())
    assert set(qat_quantizers(qat)) == acts | {"0.weight", "3.weight", "6.weight"}


@pytest.mark.parametrize("method", METHODS)
def test_convert_gives_the_modules_quantize_ptq_gives(method):
    model = conv_net()
    qat = prepare_qat(model, method, 4, 4, loader())
    train_steps(qat)
    converted = convert(qat)
    ptq = quantize_ptq(model, loader(), 4, 4)
    assert isinstance(converted, fx.GraphModule) and not converted.training
    assert dict(converted.named_modules()).keys() == dict(ptq.named_modules()).keys()
    theirs_by_name = dict(ptq.named_modules())
    for name, ours in converted.named_modules():
        theirs = theirs_by_name[name]
        if not name:  # the root: a GraphModule both (copies rename its class)
            continue
        if isinstance(theirs, FakeQuantWeight):  # frozen at a learned step, or as PTQ's
            assert isinstance(ours, FakeQuantWeight), name
        else:  # the same class (parametrized layers get a class of the same name)
            assert type(ours).__name__ == type(theirs).__name__, name
        if isinstance(theirs, ActQuant):
            assert ours.observer is None and ours.quantizing and not ours.observing
    assert qat_quantizers(converted) == {}
    assert ptq.code == converted.code  # the same graph


@pytest.mark.parametrize("method", METHODS)
def test_converted_model_computes_what_the_trained_model_computes_in_eval_mode(method):
    qat = prepare_qat(conv_net(), method, 3, 3, loader())
    train_steps(qat)
    if (
        method == "lsq+"
    ):  # convert rounds β/s to an integer zero point: do it here first
        for act in qat.modules():
            if isinstance(act, LSQPlusActQuant):
                act.offset.data = -act.step.data * torch.round(
                    -act.offset.data / act.step.data
                )
    x = torch.randn(6, 1, 8, 8)
    converted = convert(qat)
    torch.testing.assert_close(converted(x), qat.eval()(x), rtol=1e-4, atol=1e-5)


def test_learned_quantizer_parameters_train_and_ranges_track():
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader())
    steps = {n: q.step.detach().clone() for n, q in qat_quantizers(qat).items()}
    train_steps(qat)
    for name, quant in qat_quantizers(qat).items():
        assert not torch.equal(quant.step.detach(), steps[name]), name
    pact = prepare_qat(conv_net(), "pact", 2, 2, loader())
    alphas = {
        n: q.alpha.item()
        for n, q in qat_quantizers(pact).items()
        if hasattr(q, "alpha")
    }
    train_steps(pact)
    assert any(
        q.alpha.item() != alphas[n]
        for n, q in qat_quantizers(pact).items()
        if n in alphas
    )
    ste = prepare_qat(conv_net(), "ste", 4, 4, loader())
    ranges = {
        n: q.max_val.item()
        for n, q in qat_quantizers(ste).items()
        if hasattr(q, "max_val")
    }
    train_steps(ste)
    assert all(
        q.max_val.item() != ranges[n]
        for n, q in qat_quantizers(ste).items()
        if n in ranges
    )


def test_per_channel_false_gives_one_step_per_layer():
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader(), per_channel=False)
    assert qat_quantizers(qat)["6.weight"].step.dim() == 0
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader())
    assert qat_quantizers(qat)["6.weight"].step.shape == (5,)


def test_fold_bn_false_keeps_the_batchnorm_and_freeze_reaches_convbn():
    qat = prepare_qat(conv_net(), "ste", 8, 8, loader(), fold_bn=False)
    assert isinstance(qat.get_submodule("1"), nn.BatchNorm2d)
    qat = prepare_qat(conv_net(), "ste", 8, 8, loader(), freeze_bn_after=5)
    assert qat.get_submodule("0").freeze_bn_after == 5


def test_excluded_layers_stay_float():
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader(), exclude="6")
    assert "6.weight" not in qat_quantizers(qat)
    assert not parametrize.is_parametrized(qat.get_submodule("6"))


def test_qat_composes_with_a_pruning_mask_and_convert_keeps_the_zeros():
    model = conv_net()
    mask = torch.rand(5, 144, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_mask(model[6], mask)
    qat = prepare_qat(model, "lsq", 4, 4, loader())
    train_steps(qat)
    converted = convert(qat)
    assert torch.equal(
        converted.get_submodule("6").weight[~mask], torch.zeros(int((~mask).sum()))
    )


def test_a_converted_qat_model_packs_like_a_ptq_model():
    model = conv_net()
    converted = convert(prepare_qat(model, "lsq", 4, 4, loader()))
    ptq = quantize_ptq(model, loader(), 4, 4)
    ours = measure.size_bytes(converted, "packed")
    theirs = measure.size_bytes(ptq, "packed")
    assert abs(ours - theirs) <= 0.02 * theirs


def test_state_dict_round_trips_into_a_freshly_prepared_model():
    model = conv_net()
    qat = prepare_qat(model, "lsq", 4, 4, loader())
    train_steps(qat)
    fresh = prepare_qat(model, "lsq", 4, 4, loader())
    fresh.load_state_dict(qat.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(fresh.eval()(x), qat.eval()(x))


def test_prepare_and_convert_leave_the_callers_model_unchanged():
    model = conv_net()
    before = snapshot(model)
    qat = prepare_qat(model, "lsq", 4, 4, loader())
    assert_unchanged(model, before)
    train_steps(qat)
    qat_before = snapshot(qat)
    convert(qat)
    assert_unchanged(qat, qat_before)


# ---- bad input: a clear error, and the caller's model unchanged ----------------------------


@pytest.mark.parametrize(
    "method, weight_bits, act_bits, error, message",
    [
        ("lsq", 1, 4, ValueError, r"weight_bits must be an int in \[2, 16\], got 1"),
        ("ste", 17, 4, ValueError, r"weight_bits must be an int in \[2, 16\], got 17"),
        (
            "dorefa",
            16,
            4,
            ValueError,
            r"weight_bits must be an int in \[1, 15\], got 16",
        ),
        ("pact", 4, 0, ValueError, r"act_bits must be an int in \[1, 16\], got 0"),
        ("lsq+", 4, 4.0, TypeError, r"act_bits must be an int"),
        (
            "xnor",
            4,
            4,
            ValueError,
            r"method must be one of 'ste', .*'dorefa'; got 'xnor'",
        ),
    ],
)
def test_unknown_methods_and_unsupported_bits_are_refused(
    method, weight_bits, act_bits, error, message
):
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        prepare_qat(model, method, weight_bits, act_bits, loader())
    assert_unchanged(model, before)


def test_signed_input_with_one_bit_lsq_activations_is_refused():
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=r"act_bits must be an int in \[2, 16\] for activation"
    ):
        prepare_qat(model, "lsq", 4, 1, loader())
    assert_unchanged(model, before)


def test_a_model_with_nothing_to_quantize_is_refused():
    model = nn.Sequential(nn.ReLU(), nn.Flatten())
    with pytest.raises(ValueError, match="has nothing to quantize"):
        prepare_qat(model, "lsq", 4, 4, loader())


def test_a_model_prepared_or_quantized_already_is_refused():
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader())
    before = snapshot(qat)
    with pytest.raises(ValueError, match="already prepared for QAT"):
        prepare_qat(qat, "ste", 4, 4, loader())
    assert_unchanged(qat, before)
    ptq = quantize_ptq(conv_net(), loader(), 8, 8)
    with pytest.raises(ValueError, match="already fake-quantized"):
        prepare_qat(ptq, "lsq", 4, 4, loader())


@pytest.mark.parametrize(
    "bad, error, message",
    [([], ValueError, "yielded no batches"), (3, TypeError, "iterable of batches")],
)
def test_a_bad_calibration_loader_is_refused(bad, error, message):
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        prepare_qat(model, "lsq", 4, 4, bad)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", ["ste", "lsq", "lsq+", "pact"])
def test_a_nan_activation_is_refused_with_the_activations_name(method):
    model = conv_net()
    before = snapshot(model)
    with pytest.raises(ValueError, match="activation 'input_1'.*NaN or infinite"):
        prepare_qat(model, method, 4, 4, [torch.full((2, 1, 8, 8), float("nan"))])
    assert_unchanged(model, before)


def test_a_batchnorm_with_zero_gamma_cannot_be_folded_in_training():
    model = conv_net()
    model[1].weight.data[2] = 0.0
    before = snapshot(model)
    with pytest.raises(ValueError, match="γ = 0.*fold_bn=False"):
        prepare_qat(model, "ste", 8, 8, loader())
    assert_unchanged(model, before)
    prepare_qat(model, "ste", 8, 8, loader(), fold_bn=False)


def test_convert_refuses_a_model_without_qat_quantizers():
    with pytest.raises(
        ValueError, match="convert needs a model returned by prepare_qat"
    ):
        convert(conv_net())
    with pytest.raises(
        ValueError, match="convert needs a model returned by prepare_qat"
    ):
        convert(quantize_ptq(conv_net(), loader(), 8, 8))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convert("model")


def test_convert_refuses_a_step_driven_below_zero_and_leaves_the_model_unchanged():
    qat = prepare_qat(conv_net(), "lsq", 4, 4, loader())
    qat_quantizers(qat)["3.weight"].step.data[1] = -0.01
    before = snapshot(qat)
    with pytest.raises(
        ValueError, match="LSQ step of a weight must stay finite and > 0"
    ):
        convert(qat)
    assert_unchanged(qat, before)


def test_an_untraceable_model_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(ValueError, match="torch.fx could not trace Branchy"):
        prepare_qat(Branchy(), "lsq", 4, 4, [torch.randn(2, 4)])


def test_every_method_class_constructs_with_its_defaults():
    for weight_cls, act_cls in QAT_METHODS.values():
        weight_cls()
        act_cls()
    ConvBN(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    copy.deepcopy(prepare_qat(conv_net(), "pact", 4, 4, loader()))


@pytest.mark.parametrize("method", METHODS)
def test_a_converted_w8a8_model_runs_on_the_integer_pipeline_and_the_int8_kernels(
    method,
):
    # convert hands over quantize_ptq's module types, so deployment reads a QAT model as it
    # reads a PTQ one. Integer requantization may move a code of the last quantized
    # activation by one where the float value sits near a rounding tie: at most one step of
    # that activation through each row of the last layer's weights.
    from minicompress.quantization import to_backend, to_integer

    weight_bits = 7 if method == "dorefa" else 8  # DoReFa's grid takes one bit more
    qat = prepare_qat(conv_net(), method, weight_bits, 8, loader())
    train_steps(qat)
    converted = convert(qat)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    last_act = activation_quantizers(converted)["_5_quant"]
    bound = float(last_act.scale) * float(
        converted.get_submodule("6").weight.detach().abs().sum(1).max()
    )
    with torch.no_grad():
        reference = converted(x)
        integer = to_integer(converted)(x)
        assert float((integer - reference).abs().max()) <= bound
        assert bool((integer.argmax(1) == reference.argmax(1)).float().mean() >= 0.9)
        if "x86" in torch.backends.quantized.supported_engines:
            backend = to_backend(converted)(x)
            assert float((backend - reference).abs().max()) <= bound
