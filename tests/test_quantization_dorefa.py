"""Tests of minicompress.quantization.dorefa: Zhou et al. 2016, Eq. 5 and 9, values and
gradients written out by hand, activations pinned to torch's fake-quant op."""

import pytest
import torch

from minicompress.quantization import (
    ActQuant,
    DoReFaActQuant,
    DoReFaWeight,
    FakeQuantWeight,
    dorefa_activation,
    dorefa_weight,
    quantize_k,
)

F64 = torch.float64


def test_quantize_k_rounds_onto_k_bit_fractions():
    r = torch.tensor([0.0, 0.1, 0.2, 0.49, 0.51, 1.0], dtype=F64)
    # 2 bits: {0, 1/3, 2/3, 1}
    expected = torch.tensor([0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 1.0], dtype=F64)
    torch.testing.assert_close(quantize_k(r, 2), expected)


def test_dorefa_weight_worked_by_hand():
    w = torch.tensor([1.0, -0.2, 0.05, -2.0], dtype=F64)
    # tanh = [0.762, -0.197, 0.050, -0.964]; r = tanh/(2·0.964) + 1/2 = [0.895, 0.398, 0.526, 0]
    # 2 bits: round(3r)/3 = [1, 1/3, 2/3, 0] -> 2q − 1 = [1, -1/3, 1/3, -1]
    expected = torch.tensor([1.0, -1 / 3, 1 / 3, -1.0], dtype=F64)
    torch.testing.assert_close(dorefa_weight(w, 2), expected)


def dorefa_weight_grad_by_hand(w, upstream, axis=None):
    """∂L/∂W of Eq. 9 with the straight-through quantize_k, through tanh and the max:
    with t = tanh W, M = max|t| (at index m), r = t/(2M) + 1/2 and Ŵ = 2·q(r) − 1,
    ∂L/∂t_j = u_j/M − [j = m]·sign(t_m)·Σ_i u_i t_i / M², then ∂t_j/∂W_j = 1 − t_j²."""
    t = torch.tanh(w)
    rows = [t] if axis is None else list(t)
    ups = [upstream] if axis is None else list(upstream)
    grads = []
    for t_row, u_row in zip(rows, ups):
        flat_t, flat_u = t_row.flatten(), u_row.flatten()
        m = int(flat_t.abs().argmax())
        big = flat_t.abs()[m]
        grad_t = flat_u / big
        grad_t[m] -= torch.sign(flat_t[m]) * (flat_u * flat_t).sum() / big**2
        grads.append(grad_t.reshape(t_row.shape))
    grad_t = grads[0] if axis is None else torch.stack(grads)
    return grad_t * (1 - t**2)


@pytest.mark.parametrize("axis", [None, 0])
def test_dorefa_weight_gradient_runs_through_tanh_and_the_max(axis):
    torch.manual_seed(0)
    w = torch.randn(3, 5, dtype=F64, requires_grad=True)
    upstream = torch.randn(3, 5, dtype=F64)
    dorefa_weight(w, 3, axis).backward(upstream)
    expected = dorefa_weight_grad_by_hand(w.detach(), upstream, axis)
    torch.testing.assert_close(w.grad, expected, rtol=1e-12, atol=1e-12)


def test_dorefa_activation_equals_torchs_fake_quantize_on_zero_to_one():
    # clip(x, 0, 1) quantized to k bits is torch's fused op with scale 1/(2^k − 1), grid
    # [0, 2^k − 1]: the values, and the straight-through gradient (1 on [0, 1], 0 outside)
    # except in the half step past each end, where torch clips after rounding (see
    # test_torch_clips_after_rounding_where_the_paper_clips_before in the LSQ tests).
    torch.manual_seed(1)
    for bits in (1, 2, 4):
        n = 2**bits - 1
        x = torch.rand(100) * 1.6 - 0.3
        x = x[(x <= -0.5 / n) | ((x >= 0) & (x <= 1)) | (x >= 1 + 0.5 / n)]
        x = x.requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        ours = dorefa_activation(x, bits)
        theirs = torch.fake_quantize_per_tensor_affine(x_ref, 1.0 / n, 0, 0, n)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        ours.sum().backward()
        theirs.sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_exported_weight_sits_on_odd_codes_of_a_grid_one_bit_wider(bits):
    torch.manual_seed(2)
    weight = torch.randn(4, 6)
    quant = DoReFaWeight(bits=bits, axis=0)
    stored, frozen = quant.export(weight)
    assert isinstance(frozen, FakeQuantWeight) and frozen.bits == bits + 1
    assert frozen.restricted and (frozen.qmin, frozen.qmax) == (
        1 - 2**bits,
        2**bits - 1,
    )
    torch.testing.assert_close(frozen(stored), quant(weight), rtol=0, atol=1e-6)
    codes = torch.round(stored * (2**bits - 1))
    assert bool((codes.remainder(2) == 1).all())  # odd: the DoReFa grid has no 0
    assert len(codes.unique()) <= 2**bits


def test_exported_activation_quantizer_is_a_frozen_actquant_with_the_same_output():
    act = DoReFaActQuant(bits=3)
    act(torch.zeros(1))
    frozen = act.export()
    assert isinstance(frozen, ActQuant) and (frozen.qmin, frozen.qmax) == (0, 7)
    # off the rounding ties (k + 1/2)/7, where float32(1/7) may tip the other way
    x = torch.linspace(-0.5, 1.5, 81) + 0.003
    torch.testing.assert_close(frozen(x), act(x), rtol=0, atol=1e-6)


def test_an_all_zero_weight_stays_finite():
    out = dorefa_weight(torch.zeros(2, 3), 2)
    assert bool(torch.isfinite(out).all())


def test_bits_a_dorefa_quantizer_cannot_hold_are_refused():
    with pytest.raises(
        ValueError, match=r"weight_bits must be an int in \[1, 15\], got 16"
    ):
        DoReFaWeight(bits=16)
    with pytest.raises(
        ValueError, match=r"act_bits must be an int in \[1, 16\], got 0"
    ):
        DoReFaActQuant(bits=0)
