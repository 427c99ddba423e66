"""Tests of the sparse storage formats of minicompress.measure.size_bytes on pruned models."""

import copy

import pytest
import torch
from torch import nn

from minicompress import measure, models
from minicompress.pruning import make_permanent, prune_unstructured

LITERAL = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 4.0]])


def test_csr_encoding_of_a_literal_matrix():
    encoded = measure.encode_tensor(LITERAL, "csr")
    # Compressed sparse rows by hand: values row by row, their columns, where each row starts.
    assert encoded["values"].tolist() == [2.0, 3.0, 4.0]
    assert encoded["col_indices"].tolist() == [1, 0, 2]
    assert encoded["crow_indices"].tolist() == [0, 1, 3]
    assert encoded["col_indices"].dtype == torch.int32
    assert encoded["crow_indices"].dtype == torch.int32


def test_bitmask_encoding_of_a_literal_matrix():
    encoded = measure.encode_tensor(LITERAL, "bitmask")
    # Nonzero pattern 0 1 0 1 0 1, padded with two zero bits: 0b01010100 = 84.
    assert encoded["bits"].tolist() == [84]
    assert encoded["values"].tolist() == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("format", ["csr", "bitmask", "dense"])
@pytest.mark.parametrize(
    "shape, dtype",
    [((7, 5), torch.float32), ((4, 3, 3, 3), torch.float32), ((9, 2), torch.float64)],
)
def test_decoding_round_trips(format, shape, dtype):
    torch.manual_seed(0)
    tensor = torch.randn(shape, dtype=dtype) * (torch.rand(shape) > 0.6)
    decoded = measure.decode_tensor(measure.encode_tensor(tensor, format))
    assert decoded.dtype == dtype
    assert torch.equal(decoded, tensor)


@pytest.mark.parametrize("format", ["csr", "bitmask"])
def test_all_zero_dense_and_one_dimensional_tensors_round_trip(format):
    for tensor in (torch.zeros(3, 4), torch.ones(2, 9), torch.arange(5.0)):
        encoded = measure.encode_tensor(tensor, format)
        assert torch.equal(measure.decode_tensor(encoded), tensor)
    assert measure.encode_tensor(torch.arange(5.0), format) is not None
    assert isinstance(measure.encode_tensor(torch.arange(5.0), format), torch.Tensor)


def payload(model, format):
    """The closed form: bytes of the encoded numbers alone, without torch.save's framing."""
    total = 0
    for tensor in measure.effective_state_dict(model).values():
        numel, item = tensor.numel(), tensor.element_size()
        nnz = int(torch.count_nonzero(tensor))
        if format == "dense" or tensor.dim() < 2:
            total += numel * item
        elif format == "csr":
            total += nnz * item + 4 * nnz + 4 * (tensor.shape[0] + 1)
        else:
            total += -(-numel // 8) + nnz * item
    return total


@pytest.mark.parametrize("format", ["dense", "csr", "bitmask"])
def test_size_matches_the_closed_form_within_the_serialization_overhead(format):
    torch.manual_seed(0)
    model = prune_unstructured(models.build("lenet300"), 0.9)
    tensors = len(measure.effective_state_dict(model))
    # torch.save writes a zip archive: a header, then per stored array a record name and
    # alignment padding (a few hundred bytes), never less than the numbers themselves.
    overhead = measure.size_bytes(model, format) - payload(model, format)
    assert 0 < overhead < 1_500 + 400 * 3 * tensors


def test_csr_pays_off_only_below_about_half_density():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(300, 300, bias=False))
    dense = measure.size_bytes(layer)
    sizes = {}
    for amount in (0.4, 0.6):
        pruned = prune_unstructured(copy.deepcopy(layer), amount)
        sizes[amount] = measure.size_bytes(pruned, "csr")
    assert sizes[0.4] > dense > sizes[0.6]


def test_bitmask_beats_csr_above_a_few_percent_density():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(300, 300, bias=False))
    pruned = prune_unstructured(layer, 0.9)
    assert measure.size_bytes(pruned, "bitmask") < measure.size_bytes(pruned, "csr")


def test_masked_and_permanent_models_have_the_same_size_in_every_format():
    torch.manual_seed(0)
    model = prune_unstructured(models.build("lenet5"), 0.8)
    sizes = [measure.size_bytes(model, f) for f in measure.SIZE_FORMATS]
    make_permanent(model)
    assert [measure.size_bytes(model, f) for f in measure.SIZE_FORMATS] == sizes


def test_unknown_format_names_the_allowed_ones():
    with pytest.raises(
        ValueError, match="format must be one of 'dense', 'csr', 'bitmask', 'packed'; got 'coo'"
    ):
        measure.size_bytes(nn.Linear(2, 2), format="coo")
    with pytest.raises(ValueError, match="format must be one of 'dense', 'csr', 'bitmask', 'packed'; got 'coo'"):
        measure.encode_tensor(torch.ones(2, 2), "coo")
