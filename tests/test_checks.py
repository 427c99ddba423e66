"""The shared argument checks: one wording per rule, TypeError for kind, ValueError for value."""

import math

import pytest
import torch
from torch import nn

from minicompress import _checks


def test_int_accepts_ints_in_range_and_names_the_range():
    assert _checks.check_int(8, "bits", low=1, high=16) == 8
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 17"):
        _checks.check_int(17, "bits", low=1, high=16)
    with pytest.raises(ValueError, match="epochs must be an int >= 0, got -1"):
        _checks.check_int(-1, "epochs", low=0)


@pytest.mark.parametrize("bad", [True, 2.0, "3", None])
def test_int_refuses_other_kinds_with_a_type_error(bad):
    with pytest.raises(TypeError, match="n must be an int >= 1"):
        _checks.check_int(bad, "n", low=1)


def test_real_refuses_nan_and_inf_whatever_the_bounds():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="must be a finite number"):
            _checks.check_real(bad, "lr")


def test_real_open_and_closed_bounds():
    assert _checks.check_real(1, "temperature", low=0, low_open=True) == 1.0
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0.0"):
        _checks.check_real(0, "temperature", low=0, low_open=True)
    assert _checks.check_real(0, "w_kd", low=0) == 0.0
    with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\), got 1.0"):
        _checks.check_real(1, "p", low=0, high=1, high_open=True)
    with pytest.raises(TypeError):
        _checks.check_real(True, "p")


def test_fraction_is_zero_to_one_exclusive():
    assert _checks.check_fraction(0, "amount") == 0.0
    for bad in (1.0, 1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"amount must be a float in \[0, 1\)"):
            _checks.check_fraction(bad, "amount")
    with pytest.raises(TypeError, match="amount"):
        _checks.check_fraction("0.5", "amount")


def test_bool_refuses_truthy_stand_ins():
    assert _checks.check_bool(False, "symmetric") is False
    for bad in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="symmetric must be True or False"):
            _checks.check_bool(bad, "symmetric")


def test_choice_lists_the_allowed_values():
    methods = {"ste": None, "lsq": None}
    assert _checks.check_choice("lsq", "method", methods) == "lsq"
    with pytest.raises(ValueError, match="method must be one of 'ste', 'lsq'; got 'pact'"):
        _checks.check_choice("pact", "method", methods)
    with pytest.raises(ValueError, match="axis"):  # a tensor compares without raising
        _checks.check_choice(torch.tensor([0, 1]), "axis", (None, 0, 1))


def test_module_tensor_and_shape_checks():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        _checks.check_module("lenet5")
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        _checks.check_tensor([1.0], "logits")
    with pytest.raises(ValueError, match=r"logits must have 2 dimensions, got shape \(3,\)"):
        _checks.check_tensor(torch.zeros(3), "logits", dims=2)
    with pytest.raises(ValueError, match="weight holds 1 NaN or infinite value"):
        _checks.check_tensor(torch.tensor([1.0, math.nan]), "weight", finite=True)
    with pytest.raises(ValueError, match=r"student: \(2, 3\)\n  teacher: \(2, 4\)"):
        _checks.check_same_shape(torch.zeros(2, 3), torch.zeros(2, 4), "student", "teacher")


def test_a_single_string_is_one_name():
    assert _checks.check_names("bn1", "layers") == ("bn1",)
    assert _checks.check_names(["a", "b"], "layers") == ("a", "b")
    with pytest.raises(TypeError, match="layers must hold str names"):
        _checks.check_names(["a", 3], "layers")
    with pytest.raises(TypeError, match="layers must be a str or a collection"):
        _checks.check_names(3, "layers")


def test_module_names_must_exist_and_be_of_the_kind():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert list(_checks.check_module_names(model, "1", "layers", (nn.BatchNorm2d,))) == ["1"]
    with pytest.raises(ValueError, match="'0', which is not a BatchNorm2d module.*allowed: 1"):
        _checks.check_module_names(model, ["0"], "layers", (nn.BatchNorm2d,))
    with pytest.raises(ValueError, match="'fc'"):
        _checks.check_module_names(model, "fc", "layers")


def test_a_misspelt_module_name_is_answered_with_the_closest_names():
    model = nn.Sequential()
    model.add_module("layer1", nn.Linear(2, 2))
    model.add_module("layer4", nn.Linear(2, 2))
    model.add_module("fc", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'layr4'.*closest: 'layer4', 'layer1'; allowed: layer1"):
        _checks.check_module_names(model, "layr4", "teacher")


def test_first_batch_of_an_empty_loader_is_an_error():
    assert _checks.first_batch([1, 2], "loader") == 1
    with pytest.raises(ValueError, match="calibration_loader yielded no batches"):
        _checks.first_batch([], "calibration_loader")
    with pytest.raises(TypeError, match="calibration_loader must be an iterable"):
        _checks.first_batch(3, "calibration_loader")


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            return self.fc(x)
        return x


def test_trace_names_where_it_failed():
    graph = _checks.trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    assert [n.op for n in graph.graph.nodes] == ["placeholder", "call_module", "call_module", "output"]
    with pytest.raises(ValueError, match="could not trace _Branchy.*Quantization needs a model"):
        _checks.trace(_Branchy(), "quantization")


def test_int_sequences_devices_and_paths():
    assert _checks.check_ints([8, "M"][:1], "widths", low=1) == (8,)
    with pytest.raises(ValueError, match="each of widths must be an int >= 1, got 0"):
        _checks.check_ints((8, 0), "widths", low=1)
    with pytest.raises(TypeError, match="widths must be a non-empty list or tuple"):
        _checks.check_ints(8, "widths")
    assert _checks.check_device(None) is None
    assert _checks.check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'gpu0' is not a device"):
        _checks.check_device("gpu0")
    with pytest.raises(TypeError, match="device must be a str"):
        _checks.check_device(3)
    with pytest.raises(TypeError, match="root must be a path"):
        _checks.check_path(3, "root")


def test_forward_names_the_shape_that_does_not_fit():
    with pytest.raises(ValueError, match=r"inputs of shape \(2, 3\) does not fit Linear"):
        _checks.forward(nn.Linear(4, 2), torch.zeros(2, 3))


def test_axis_must_be_a_dimension_of_the_tensor():
    x = torch.zeros(2, 3, 4)
    assert _checks.check_axis(-1, x) == 2 and _checks.check_axis(None, x) is None
    with pytest.raises(ValueError, match=r"axis must be an int in \[-3, 2\] or None for a tensor of shape \(2, 3, 4\), got 3"):
        _checks.check_axis(3, x)
    with pytest.raises(TypeError, match=r"axis must be an int in \[-3, 2\], got None"):
        _checks.check_axis(None, x, allow_none=False)
    with pytest.raises(TypeError, match="axis must be"):
        _checks.check_axis(1.0, x)


def test_same_size_compares_one_dimension_and_prints_both_shapes():
    _checks.check_same_size(torch.zeros(4, 3, 8, 8), torch.zeros(4, 16, 2, 2), "s", "t")
    with pytest.raises(ValueError, match=r"s and t must have the same batch size(.|\n)*\(4, 3\)"):
        _checks.check_same_size(torch.zeros(4, 3), torch.zeros(5, 3), "s", "t")
    with pytest.raises(ValueError, match="same channels"):
        _checks.check_same_size(torch.zeros(2, 3), torch.zeros(2, 4), "s", "t", 1, "channels")


def test_labels_are_integer_indices_below_the_class_count():
    labels = torch.tensor([0, 2, 1])
    assert _checks.check_labels(labels, "targets", 3, 3) is labels
    with pytest.raises(TypeError, match="targets must hold integer class indices"):
        _checks.check_labels(labels.float(), "targets", 3, 3)
    with pytest.raises(ValueError, match=r"targets must hold 4 class indices \(one per sample\)"):
        _checks.check_labels(labels, "targets", 4, 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\], got values from 0 to 2"):
        _checks.check_labels(labels, "targets", 3, 2)
    with pytest.raises(ValueError, match="targets must have 1 dimensions"):
        _checks.check_labels(labels[None], "targets", 1, 3)
    with pytest.raises(ValueError, match=r"index must be dataset positions in \[0, 1\]"):
        _checks.check_labels(labels, "index", 3, 2, what="dataset positions")
