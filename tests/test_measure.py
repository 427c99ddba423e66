import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import measure, models


class ZeroFirstRow(nn.Module):
    # A minimal parametrization standing in for a pruning mask.
    def forward(self, weight):
        mask = torch.ones_like(weight)
        mask[0] = 0
        return weight * mask


def test_count_params_and_nonzero_on_a_hand_built_layer():
    layer = nn.Linear(4, 3)  # 12 weights + 3 biases
    with torch.no_grad():
        layer.weight[:2] = 0.0
        layer.bias[0] = 0.0
    assert measure.count_params(layer) == 15
    assert measure.count_nonzero(layer) == 15 - 8 - 1


def test_effective_weights_are_measured_through_parametrizations():
    layer = nn.Linear(5, 4, bias=False)
    parametrize.register_parametrization(layer, "weight", ZeroFirstRow())
    assert measure.count_params(layer) == 20
    assert measure.count_nonzero(layer) == 15
    state = measure.effective_state_dict(layer)
    assert list(state) == ["weight"] and torch.equal(state["weight"][0], torch.zeros(5))


def test_masked_and_permanent_models_measure_the_same():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    parametrize.register_parametrization(model[0], "weight", ZeroFirstRow())
    masked = (measure.count_nonzero(model), measure.size_bytes(model))
    parametrize.remove_parametrizations(model[0], "weight", leave_parametrized=True)
    assert (measure.count_nonzero(model), measure.size_bytes(model)) == masked


def test_macs_match_the_closed_form_for_lenet5():
    # out_h * out_w * C_out * (C_in * k * k) per conv, in * out per linear layer
    conv1 = 28 * 28 * 6 * (1 * 5 * 5)
    conv2 = 10 * 10 * 16 * (6 * 5 * 5)
    fcs = 400 * 120 + 120 * 84 + 84 * 10
    assert (
        measure.macs(models.build("lenet5"), torch.zeros(1, 1, 28, 28))
        == conv1 + conv2 + fcs
        == 416_520
    )


def test_macs_scale_with_batch_and_ignore_zeros():
    layer = nn.Conv2d(3, 8, 3, padding=1)
    one = measure.macs(layer, torch.zeros(1, 3, 10, 10))
    assert one == 10 * 10 * 8 * 27
    assert measure.macs(layer, torch.zeros(4, 3, 10, 10)) == 4 * one
    with torch.no_grad():
        layer.weight.zero_()
    assert measure.macs(layer, torch.zeros(1, 3, 10, 10)) == one


@pytest.mark.skipif("x86" not in torch.backends.quantized.supported_engines, reason="no x86 int8 engine")
def test_macs_of_torch_ao_int8_models_match_the_float_model():
    # Static int8 (grouped conv with fused ReLU, linear) and dynamic int8 (linear) modules of
    # torch.ao run torch.ops.quantized kernels; each must count the MACs of the float layer.
    from torch.ao import quantization as tq

    float_model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)
    ).eval()
    x = torch.randn(3, 4, 6, 6)
    expected = 3 * (6 * 6 * 8 * (2 * 3 * 3) + 8 * 6 * 6 * 5)
    assert measure.macs(float_model, x) == expected
    static = nn.Sequential(tq.QuantStub(), copy.deepcopy(float_model), tq.DeQuantStub()).eval()
    static.qconfig = tq.get_default_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.fuse_modules(static, [["1.0", "1.1"]], inplace=True)
        tq.prepare(static, inplace=True)
        static(x)
        tq.convert(static, inplace=True)
        dynamic = tq.quantize_dynamic(copy.deepcopy(float_model), {nn.Linear}, dtype=torch.qint8)
    assert type(static[1][0]).__name__ == "ConvReLU2d" and static[1][0].weight().is_quantized
    assert measure.macs(static, x) == measure.macs(dynamic, x) == expected


def test_dense_size_is_four_bytes_per_element_plus_a_small_header():
    for n in (1_000, 100_000):
        layer = nn.Linear(n, 1, bias=False)
        assert 4 * n < measure.size_bytes(layer) < 4 * n + 2_000


def test_size_rejects_unknown_formats():
    with pytest.raises(ValueError, match="format must be one of 'dense', 'csr', 'bitmask', 'packed'; got 'zip'"):
        measure.size_bytes(nn.Linear(2, 2), format="zip")


def test_latency_is_positive_and_keeps_the_mode():
    model = models.build("lenet5").train()
    ms = measure.latency_ms(model, torch.zeros(1, 1, 28, 28), min_run_time=0.05)
    assert 0 < ms < 1_000 and model.training
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        measure.latency_ms(model, torch.zeros(1, 1, 28, 28), threads=0)


def test_compare_latency_ranks_a_model_that_does_more_work_slower():
    # The same layer run once or four times in a row: 4x the work, timed interleaved.
    layer = nn.Linear(256, 256)
    nets = {"once": nn.Sequential(layer), "four times": nn.Sequential(*[layer] * 4)}
    nets["once"].train()
    ms = measure.compare_latency(nets, torch.zeros(64, 256), rounds=3, min_run_time=0.02)
    assert list(ms) == ["once", "four times"]
    assert ms["four times"] > 1.5 * ms["once"]  # 4x the work; a margin for a busy machine
    assert nets["once"].training  # the mode is restored


def test_compare_latency_gives_copies_of_one_model_about_the_same_time():
    # Identical work timed together: the median of interleaved samples must not let one copy
    # look much faster than another (the best of a few long runs could, on a busy machine).
    net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    copies = {name: copy.deepcopy(net) for name in "abc"}
    ms = measure.compare_latency(copies, torch.zeros(32, 256), rounds=5, min_run_time=0.1)
    assert max(ms.values()) < 1.5 * min(ms.values())


def test_compare_latency_times_plain_callables_with_their_own_inputs():
    ms = measure.compare_latency(
        {"double": lambda x: x * 2, "net": nn.Linear(3, 1)},
        {"double": torch.zeros(4), "net": torch.zeros(2, 3)},
        rounds=1,
        min_run_time=0.01,
    )
    assert all(t > 0 for t in ms.values())
    with pytest.raises(ValueError, match=r"no input for the models \['net'\]"):
        measure.compare_latency({"net": nn.Linear(3, 1)}, {}, rounds=1)
    with pytest.raises(ValueError, match="rounds must be an int >= 1, got 0"):
        measure.compare_latency({"net": nn.Linear(3, 1)}, torch.zeros(1, 3), rounds=0)
    with pytest.raises(TypeError, match="models must be a non-empty dict"):
        measure.compare_latency([nn.Linear(3, 1)], torch.zeros(1, 3))


def test_a_shape_mismatch_names_both_shapes():
    model = models.build("lenet5")
    with pytest.raises(
        ValueError, match=r"\(1, 3, 28, 28\).*'conv1'.*expects 1 input channels"
    ):
        measure.macs(model, torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(1, 10\).*expects 784 input features"):
        measure.summary(models.build("lenet300"), torch.zeros(1, 10))


def test_summary_keys_and_sparsity():
    layer = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        layer.weight[:, :3] = 0
    row = measure.summary(layer, torch.zeros(1, 10), accuracy=0.5)
    assert set(row) == {
        "params",
        "nonzeros",
        "sparsity",
        "macs",
        "size_bytes",
        "latency_ms",
        "accuracy",
    }
    assert row["sparsity"] == pytest.approx(0.3)


def test_format_table_shows_ratios_against_the_baseline():
    rows = {
        "dense": {
            "accuracy": 0.98,
            "params": 100,
            "size_bytes": 4000,
            "latency_ms": 2.0,
        },
        "small": {
            "accuracy": 0.97,
            "params": 25,
            "size_bytes": 1000,
            "latency_ms": 0.5,
        },
    }
    table = measure.format_table(rows, baseline="dense").splitlines()
    assert table[0] == "| method | accuracy | params | size | latency |"
    assert (
        table[3]
        == "| small | 97.00 % | 25 (x 4.00) | 1000 B (x 4.00) | 0.500 ms (x 4.00) |"
    )
    with pytest.raises(ValueError, match="baseline 'huge'"):
        measure.format_table(rows, baseline="huge")
    with pytest.raises(ValueError, match="empty"):
        measure.format_table([])
