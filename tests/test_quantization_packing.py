"""Tests of minicompress.quantization.packing and of measure.size_bytes(format="packed")."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from minicompress import measure
from minicompress.pruning import apply_mask
from minicompress.quantization import (
    CastWeight,
    FakeQuantWeight,
    pack_bits,
    packed_nbytes,
    quantize_weights,
    unpack_bits,
)


def test_bit_streams_worked_by_hand():
    assert pack_bits(torch.tensor([1, 2, 3, 15]), 4).tolist() == [
        0x21,
        0xF3,
    ]  # low nibble first
    assert pack_bits(torch.tensor([0, 1, 2, 3]), 2).tolist() == [0b11100100]
    assert pack_bits(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [
        0b1101,
        1,
    ]
    # 3-bit codes 7, 0, 5 -> stream bits 111 000 101 (LSB first) -> bytes 0b01000111, 0b1
    assert pack_bits(torch.tensor([7, 0, 5]), 3).tolist() == [71, 1]
    assert pack_bits(torch.tensor([0x1234]), 16).tolist() == [
        0x34,
        0x12,
    ]  # little-endian


@pytest.mark.parametrize("bits", range(1, 17))
def test_unpacking_inverts_packing_for_every_width(bits):
    gen = torch.Generator().manual_seed(bits)
    for n in (0, 1, 7, 9, 1001):
        values = torch.randint(0, 2**bits, (n,), generator=gen)
        packed = pack_bits(values, bits)
        assert packed.dtype == torch.uint8 and len(packed) == packed_nbytes(
            n, bits
        ) == math.ceil(n * bits / 8)
        assert torch.equal(unpack_bits(packed, bits, n), values)


def test_bad_codes_and_streams_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"values must lie in \[0, 15\] for 4 bits, got \[0, 16\]"
    ):
        pack_bits(torch.tensor([0, 16]), 4)
    with pytest.raises(
        ValueError, match=r"values must lie in \[0, 3\] for 2 bits, got \[-1, 0\]"
    ):
        pack_bits(torch.tensor([-1, 0]), 2)
    with pytest.raises(TypeError, match="values must be an integer tensor"):
        pack_bits(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        pack_bits(torch.tensor([0]), 0)
    with pytest.raises(
        ValueError, match="packed holds 2 bytes; 5 codes of 4 bits need 3"
    ):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 4, 5)
    with pytest.raises(TypeError, match="packed must be a uint8 tensor"):
        unpack_bits(torch.zeros(2, dtype=torch.int32), 4, 4)


def two_layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("per_channel", [True, False])
def test_packed_file_size_is_the_bit_arithmetic_plus_framing(bits, per_channel):
    quantized = quantize_weights(two_layers(), bits=bits, per_channel=per_channel)
    layers = (quantized[0], quantized[2])
    # b/8 bytes per weight, a float32 scale per channel (per-tensor: a plain number; the
    # zero points of a symmetric grid are all 0, stored as one number), float32 biases
    arithmetic = sum(
        math.ceil(layer.weight.numel() * bits / 8)
        + (4 * layer.out_features if per_channel else 0)
        + 4 * layer.bias.numel()
        for layer in layers
    )
    size = measure.size_bytes(quantized, "packed")
    tensors = 6 if per_channel else 4  # codes (+ scales) and bias per layer
    # torch.save's framing: about 1.3 kB per file (zip directory, version records) and a few
    # hundred bytes per tensor record and pickled key
    assert arithmetic < size <= arithmetic + 1500 + 400 * tensors
    assert size / arithmetic < 1.05


def test_packed_tensors_unpack_to_the_effective_weights():
    quantized = quantize_weights(two_layers(), bits=3)
    packed = measure.packed_tensors(quantized)
    assert sorted(packed) == ["0.weight", "2.weight"]
    for name, layer in (("0.weight", quantized[0]), ("2.weight", quantized[2])):
        assert torch.equal(FakeQuantWeight.unpack(packed[name]), layer.weight)


def test_a_pruned_then_quantized_weight_packs_what_the_mask_lets_through():
    net = two_layers()
    mask = torch.rand(512, 512, generator=torch.Generator().manual_seed(1)) > 0.5
    apply_mask(net[0], mask)
    quantized = quantize_weights(net, bits=4)
    unpacked = FakeQuantWeight.unpack(measure.packed_tensors(quantized)["0.weight"])
    assert torch.equal(unpacked, quantized[0].weight) and bool(
        (unpacked[~mask] == 0).all()
    )


def test_a_parametrization_without_pack_is_stored_dense():
    net = two_layers()
    apply_mask(net[0], torch.ones(512, 512, dtype=torch.bool))
    assert measure.size_bytes(net, "packed") == measure.size_bytes(net, "dense")


def test_float16_weights_pack_to_two_bytes_each():
    net = two_layers()
    for layer in (net[0], net[2]):
        parametrize.register_parametrization(layer, "weight", CastWeight("float16"))
    weights = 512 * 512 + 512 * 128
    assert measure.size_bytes(net, "dense") - measure.size_bytes(
        net, "packed"
    ) == pytest.approx(2 * weights, rel=0.01)
    packed = measure.packed_tensors(net)["0.weight"]
    assert torch.equal(CastWeight.unpack(packed), net[0].weight)
