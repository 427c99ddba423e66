"""Bit packing, and the protocol by which a weight parametrization says how it is stored.

A b-bit code needs b bits on disk, not the 32 of the float the fake-quantized layer computes
with: `pack_bits` writes codes in [0, 2^b) as one stream of bits, ceil(n·b / 8) bytes
(2 codes per byte at 4 bits, 4 at 2 bits, 8 at 1 bit); `unpack_bits` reads them back exactly.

The packing protocol (what `measure.size_bytes(model, format="packed")` relies on):

    A parametrization (a `torch.nn.utils.parametrize` module) that can be stored compactly
    defines `pack(tensor) -> dict` and `unpack(packed) -> tensor` (a staticmethod):
      - `tensor` is what the parametrization receives: the stored weight after the
        parametrizations before it (a pruning mask, say);
      - the dict holds tensors (uint8 bit streams from `pack_bits`, scales, codebooks...) and
        plain Python values (ints, floats, tuples, a "format" string) — everything needed to
        rebuild the weight and nothing else;
      - `unpack(pack(W))` equals `forward(W)` exactly (torch.equal), so the packed file holds
        the weight the layer computes with.
    `size_bytes(..., "packed")` stores `pack(...)` for every parametrized tensor whose LAST
    parametrization has `pack`; every other tensor is stored dense.

    Implemented by `FakeQuantWeight` ("uniform": b-bit codes + scale + zero point per tensor or
    channel) and `CastWeight` ("float": float16/bfloat16 values). A k-means parametrization
    would store b-bit indices + a float codebook; binary, 1-bit signs + a scale per channel;
    ternary, 2-bit codes + a scale.
"""

import math

import torch

from .. import _checks

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes"]


def pack_bits(values, bits):
    """Codes in [0, 2^bits) packed into a uint8 stream, least significant bit first.

    Code k occupies bits k·b, ..., k·b + b − 1 of the stream (byte = bit position // 8), so
    at 4 bits codes 2m and 2m+1 share byte m (low nibble first).

    Args:
        values: an integer tensor, any shape (read in row-major order), codes in [0, 2^bits).
        bits: an int in [1, 16].

    Returns:
        A 1-D uint8 tensor of ceil(values.numel() · bits / 8) bytes.

    Example:
        >>> pack_bits(torch.tensor([1, 2, 3, 15]), bits=4)   # 0x21, 0xF3
        tensor([ 33, 243], dtype=torch.uint8)
    """
    bits = _checks.check_int(bits, "bits", low=1, high=16)
    _checks.check_tensor(values, "values")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values must be an integer tensor, got dtype {values.dtype}")
    v = values.detach().flatten().cpu().to(torch.int32)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 2**bits):
        raise ValueError(
            f"values must lie in [0, {2**bits - 1}] for {bits} bits, got [{int(v.min())}, {int(v.max())}]"
        )
    if (
        bits % 8 == 0
    ):  # whole bytes: little-endian, the same stream without the bit shuffle
        return (
            torch.stack([(v >> s) & 255 for s in range(0, bits, 8)], 1)
            .flatten()
            .to(torch.uint8)
        )
    # 8 codes fill exactly `bits` bytes, so chunks of 2^20 codes pack independently (bounded memory)
    return torch.cat(
        [_pack_chunk(chunk, bits) for chunk in v.split(2**20)]
        or [v.new_zeros(0, dtype=torch.uint8)]
    )


def unpack_bits(packed, bits, numel):
    """The first `numel` codes of a `pack_bits` stream, as an int64 tensor of shape (numel,).

    Example:
        >>> unpack_bits(torch.tensor([33, 243], dtype=torch.uint8), bits=4, numel=4)
        tensor([ 1,  2,  3, 15])
    """
    bits = _checks.check_int(bits, "bits", low=1, high=16)
    numel = _checks.check_int(numel, "numel", low=0)
    _checks.check_tensor(packed, "packed", dims=1)
    if packed.dtype != torch.uint8:
        raise TypeError(
            f"packed must be a uint8 tensor from pack_bits, got dtype {packed.dtype}"
        )
    if len(packed) != packed_nbytes(numel, bits):
        raise ValueError(
            f"packed holds {len(packed)} bytes; {numel} codes of {bits} bits need "
            f"{packed_nbytes(numel, bits)}"
        )
    if bits % 8 == 0:  # whole little-endian bytes
        whole = packed.long().view(numel, bits // 8)
        return (whole << torch.arange(0, bits, 8)).sum(1)
    stream = (packed.long()[:, None] >> torch.arange(8)) & 1  # (bytes, 8), LSB first
    stream = stream.flatten()[: numel * bits].view(numel, bits)
    return (stream << torch.arange(bits)).sum(1)


def _pack_chunk(v, bits):
    """The stream of one chunk: bit t of code k is stream bit k·bits + t."""
    stream = (
        ((v[:, None] >> torch.arange(bits, dtype=torch.int32)) & 1)
        .to(torch.uint8)
        .flatten()
    )
    stream = torch.cat([stream, stream.new_zeros(-len(stream) % 8)])  # whole bytes
    weights = (2 ** torch.arange(8)).to(torch.uint8)
    return (stream.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def packed_nbytes(numel, bits):
    """Bytes of `numel` codes of `bits` bits: ceil(numel · bits / 8)."""
    return math.ceil(numel * bits / 8)
