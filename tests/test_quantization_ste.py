"""Tests of minicompress.quantization.ste: straight-through round, sign and gradient scale."""

import torch

from minicompress.quantization import grad_scale, round_ste, straight_through


def test_round_ste_matches_torchs_fake_quantize_with_unit_scale():
    # torch's fused fake-quant op with s = 1, z = 0 and a grid wider than x is round() with
    # the straight-through gradient: the reference the kernels of every QAT library share.
    x = (torch.randn(64) * 20).requires_grad_()
    reference = x.detach().clone().requires_grad_()
    ours = round_ste(x)
    theirs = torch.fake_quantize_per_tensor_affine(reference, 1.0, 0, -1000, 1000)
    upstream = torch.randn(64)
    ours.backward(upstream)
    theirs.backward(upstream)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, reference.grad, rtol=0, atol=0)


def test_round_ste_rounds_half_to_even_and_passes_the_gradient_unchanged():
    x = torch.tensor(
        [-1.5, -0.5, 0.5, 1.5, 2.5, 0.49], dtype=torch.float64, requires_grad=True
    )
    y = round_ste(x)
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64))
    assert y.tolist() == [-2.0, -0.0, 0.0, 2.0, 2.0, 0.0]
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_straight_through_gives_the_value_exactly_and_the_identity_gradient():
    x = torch.tensor([0.1, -0.7, 1e8 + 1.0], dtype=torch.float32, requires_grad=True)
    value = torch.tensor([3.3, -1.0, 1e8], dtype=torch.float32)
    y = straight_through(x, value)
    y.sum().backward()
    # bit for bit: no rounding error of the form x + (value - x)
    assert torch.equal(y.detach(), value)
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_straight_through_sign_is_binaryconnects_forward_with_identity_gradient():
    x = torch.tensor([-0.3, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = straight_through(x, torch.where(x >= 0, 1.0, -1.0).to(x.dtype))
    y.backward(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    assert y.tolist() == [-1.0, 1.0, 1.0]
    assert x.grad.tolist() == [0.5, -1.0, 2.0]


def test_grad_scale_is_the_identity_forward_and_multiplies_the_gradient_by_g():
    s = torch.tensor([0.3, 1.7], dtype=torch.float64, requires_grad=True)
    g = 1 / torch.sqrt(torch.tensor(12.0 * 7.0, dtype=torch.float64))  # 1/sqrt(N Q_P)
    y = grad_scale(s, g)
    assert torch.equal(y.detach(), s.detach())
    (y * torch.tensor([2.0, -3.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(
        s.grad, torch.tensor([2.0, -3.0], dtype=torch.float64) * g
    )


def test_grad_scale_takes_a_per_channel_g():
    s = torch.ones(3, requires_grad=True)
    grad_scale(s, torch.tensor([1.0, 0.5, 0.0])).sum().backward()
    assert s.grad.tolist() == [1.0, 0.5, 0.0]
