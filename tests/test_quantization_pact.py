"""Tests of minicompress.quantization.pact: values and gradients of Choi et al. 2018, Eq. 1-3,
written out by hand, and the values of torch's fake-quant op on [0, α]."""

import pytest
import torch

from minicompress.quantization import ActQuant, PACTActQuant, pact_quantize

F64 = torch.float64


def test_pact_values_and_gradients_follow_choi_et_al_eq_3():
    # 2 bits, α = 1.5: grid {0, 0.5, 1, 1.5}; none of the values sits on a rounding tie
    x = torch.tensor(
        [-0.8, 0.1, 0.3, 0.9, 1.49, 1.7, 4.0], dtype=F64, requires_grad=True
    )
    alpha = torch.tensor(1.5, dtype=F64, requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, -2.0, 0.25], dtype=F64)
    ours = pact_quantize(x, alpha, 2)
    ours.backward(upstream)
    # Eq. 1-2 by hand: clip to [0, 1.5], then round(y·3/1.5)·1.5/3
    assert ours.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 1.5, 1.5])
    # Eq. 3: ∂ŷ/∂x = 1 on [0, α), ∂ŷ/∂α = 1 on [α, ∞)
    inside = torch.tensor([0, 1, 1, 1, 1, 0, 0], dtype=F64)
    torch.testing.assert_close(x.grad, upstream * inside, rtol=0, atol=0)
    torch.testing.assert_close(alpha.grad, torch.tensor(-2.0 + 0.25, dtype=F64))


def test_pact_values_equal_torchs_fake_quantize_on_zero_to_alpha():
    # On the unsigned grid [0, 2^k − 1] with scale α/(2^k − 1) and zero point 0, torch's fused
    # op computes the same clipped and rounded values (the inference module convert installs).
    torch.manual_seed(0)
    x = torch.randn(200) * 3
    alpha = torch.tensor(2.3)
    for bits in (1, 2, 4, 8):
        n = 2**bits - 1
        theirs = torch.fake_quantize_per_tensor_affine(x, float(alpha) / n, 0, 0, n)
        torch.testing.assert_close(
            pact_quantize(x, alpha, bits), theirs, rtol=0, atol=1e-6
        )


def test_alpha_starts_at_the_first_batch_maximum_and_learns():
    act = PACTActQuant(bits=3)
    x = torch.tensor([[0.0, 0.5, 2.5], [1.0, 0.0, 0.2]])
    assert torch.equal(act(x), x)  # the first batch initializes and passes through
    assert act.alpha.item() == pytest.approx(2.5)
    assert isinstance(act.alpha, torch.nn.Parameter)
    act(torch.tensor([3.0, 1.0, 4.0])).sum().backward()
    assert act.alpha.grad.item() == 2.0  # two values above α


def test_exported_pact_quantizer_is_a_frozen_actquant_with_the_same_output():
    torch.manual_seed(1)
    act = PACTActQuant(bits=2, name="relu_1")
    act(torch.relu(torch.randn(16, 4)))
    frozen = act.export()
    assert isinstance(frozen, ActQuant) and frozen.observer is None
    assert (frozen.qmin, frozen.qmax, int(frozen.zero_point)) == (0, 3, 0)
    x = torch.randn(16, 4) * 2
    torch.testing.assert_close(frozen(x), act(x).detach(), rtol=0, atol=1e-6)


def test_bits_outside_one_to_sixteen_are_refused():
    with pytest.raises(
        ValueError, match=r"act_bits must be an int in \[1, 16\], got 0"
    ):
        PACTActQuant(bits=0)
    with pytest.raises(TypeError, match="act_bits must be an int"):
        PACTActQuant(bits="4")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_an_alpha_driven_to_zero_or_below_raises(bad):
    act = PACTActQuant(bits=4, name="relu_2")
    act(torch.rand(3))
    act.alpha.data = torch.tensor(bad)
    with pytest.raises(
        ValueError, match="α of activation 'relu_2' must stay finite and > 0"
    ):
        act(torch.rand(3))
    with pytest.raises(ValueError, match="must stay finite and > 0"):
        act.export()
