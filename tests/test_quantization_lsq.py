"""Tests of minicompress.quantization.lsq: LSQ and LSQ+ values and gradients, pinned to the
papers' gradient formulas written out by hand and to torch's learnable fake-quant ops."""

import math

import pytest
import torch

from minicompress.quantization import (
    ActQuant,
    FakeQuantWeight,
    LSQActQuant,
    LSQPlusActQuant,
    LSQWeight,
    lsq_plus_quantize,
    lsq_quantize,
)

F64 = torch.float64


def lsq_by_hand(v, s, qn, qp, g, upstream):
    """Esser et al. 2020, Eq. 1-3, written out: v̂, ∂L/∂v and ∂L/∂s (the latter times g)."""
    r = v / s
    below, above = r < -qn, r > qp
    inside = ~(below | above)
    v_hat = torch.round(torch.clamp(r, -qn, qp)) * s
    grad_v = upstream * inside
    ds = torch.where(below, -qn, torch.where(above, qp, -r + torch.round(r)))
    return v_hat, grad_v, (upstream * ds).sum() * g


def test_lsq_values_and_gradients_follow_esser_et_al_eq_3():
    # values below, inside and above the 3-bit signed grid [-4, 3]·0.5, none on a tie
    v = torch.tensor([-3.1, -1.9, -0.7, 0.2, 0.9, 1.6, 2.2, 4.0], dtype=F64)
    v.requires_grad_()
    s = torch.tensor(0.5, dtype=F64, requires_grad=True)
    g = 1 / math.sqrt(8 * 3)
    upstream = torch.linspace(-1, 2, 8, dtype=F64)
    ours = lsq_quantize(v, s, 4, 3, g)
    ours.backward(upstream)
    v_hat, grad_v, grad_s = lsq_by_hand(v.detach(), 0.5, 4, 3, g, upstream)
    torch.testing.assert_close(ours.detach(), v_hat, rtol=0, atol=1e-15)
    torch.testing.assert_close(v.grad, grad_v, rtol=0, atol=1e-15)
    torch.testing.assert_close(s.grad, grad_s, rtol=1e-12, atol=1e-15)
    # the worked numbers of three entries: -3.1 clips to -4·0.5 (∂/∂s = -4), 0.2 rounds to 0
    # (∂/∂s = -0.4 + 0), 4.0 clips to 3·0.5 (∂/∂s = 3)
    assert ours[0].item() == -2.0 and ours[3].item() == 0.0 and ours[7].item() == 1.5


def away_from_the_grid_ends(x, s, qmin, qmax):
    """x without the values in the half step beyond each end of the grid, where torch's
    learnable op differs from the paper (see the test after next)."""
    r = x / s
    return x[~(((r > qmax) & (r < qmax + 0.5)) | ((r < qmin) & (r > qmin - 0.5)))]


def test_lsq_equals_torchs_learnable_fake_quantize_per_tensor():
    # torch's _fake_quantize_learnable_per_tensor_affine implements LSQ's forward and its
    # step gradient (with grad_factor = g); it only takes float32 scales.
    torch.manual_seed(1)
    x = away_from_the_grid_ends(torch.randn(60) * 2, 0.37, -8, 7).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    s = torch.tensor(0.37, requires_grad=True)
    s_ref = torch.tensor([0.37], requires_grad=True)
    z_ref = torch.tensor([0.0], requires_grad=True)
    g = 1 / math.sqrt(40 * 7)
    upstream = torch.randn(len(x))
    ours = lsq_quantize(x, s, 8, 7, g)
    theirs = torch._fake_quantize_learnable_per_tensor_affine(
        x_ref, s_ref, z_ref, -8, 7, g
    )
    ours.backward(upstream)
    theirs.backward(upstream)
    assert ((x / 0.37).abs() > 8.5).sum() >= 3  # some values clip at each end
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)  # s·(1/s)
    torch.testing.assert_close(s.grad.reshape(1), s_ref.grad, rtol=1e-5, atol=1e-6)


def test_torch_clips_after_rounding_where_the_paper_clips_before():
    # LSQ rounds clip(v/s, −Q_N, Q_P): v/s = 7.3 is clipped (∂/∂v = 0, ∂/∂s = Q_P = 7).
    # torch's kernel clips round(v/s) + z: 7.3 rounds to 7, inside (∂/∂v = 1, ∂/∂s = -0.3).
    # The values agree; only the gradients in the half step past each end differ.
    v = torch.tensor([7.3, -8.3], requires_grad=True)
    s = torch.tensor(1.0, requires_grad=True)
    ours = lsq_quantize(v, s, 8, 7, 1.0)
    ours.backward(torch.tensor([1.0, 0.0]))
    assert ours.tolist() == [7.0, -8.0]
    assert v.grad.tolist() == [0.0, 0.0] and s.grad.item() == pytest.approx(7.0)
    v_ref = v.detach().clone().requires_grad_()
    s_ref = torch.tensor([1.0], requires_grad=True)
    theirs = torch._fake_quantize_learnable_per_tensor_affine(
        v_ref, s_ref, torch.zeros(1), -8, 7, 1.0
    )
    theirs.backward(torch.tensor([1.0, 0.0]))
    assert v_ref.grad.tolist() == [1.0, 0.0]
    assert s_ref.grad.item() == pytest.approx(-0.3, abs=1e-6)


def test_lsq_per_channel_weight_equals_torchs_learnable_per_channel_op():
    torch.manual_seed(2)
    weight = torch.randn(3, 4, requires_grad=True)
    weight_ref = weight.detach().clone().requires_grad_()
    quant = LSQWeight(bits=4, axis=0)
    quant.initialize(weight)
    s_ref = quant.step.detach().clone().requires_grad_()
    z_ref = torch.zeros(3, requires_grad=True)
    upstream = torch.randn(3, 4)
    ours = quant(weight)
    theirs = torch._fake_quantize_learnable_per_channel_affine(
        weight_ref, s_ref, z_ref, 0, -8, 7, quant.g
    )
    ours.backward(upstream)
    theirs.backward(upstream)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(quant.step.grad, s_ref.grad, rtol=1e-5, atol=1e-6)


def test_lsq_plus_offset_gradient_follows_bhalgat_et_al():
    # x̂ = round(clamp((x − β)/s, 0, 3))·s + β: ∂x̂/∂β = 0 inside the grid, 1 where clipped;
    # ∂x̂/∂s = round(r) − r inside, 0 below, 3 above, with r = (x − β)/s
    x = torch.tensor([-1.3, -0.45, 0.1, 0.62, 1.4, 2.0], dtype=F64, requires_grad=True)
    s = torch.tensor(0.4, dtype=F64, requires_grad=True)
    beta = torch.tensor(-0.5, dtype=F64, requires_grad=True)
    g = 0.25
    upstream = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0], dtype=F64)
    ours = lsq_plus_quantize(x, s, beta, 0, 3, g)
    ours.backward(upstream)
    r = (x.detach() + 0.5) / 0.4
    below, above = r < 0, r > 3
    inside = ~(below | above)
    expected = torch.round(torch.clamp(r, 0, 3)) * 0.4 - 0.5
    d_s = torch.where(below, 0.0, torch.where(above, 3.0, torch.round(r) - r))
    torch.testing.assert_close(ours.detach(), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(x.grad, upstream * inside, rtol=0, atol=1e-15)
    torch.testing.assert_close(beta.grad, (upstream * ~inside).sum() * g)
    torch.testing.assert_close(s.grad, (upstream * d_s).sum() * g)
    assert below.any() and above.any() and inside.any()


def test_lsq_plus_equals_torchs_learnable_op_with_an_integer_zero_point():
    # With β = −s·z (z an integer) both compute s·(clamp(round(x/s) + z) − z). torch learns
    # z instead of β = −s·z, so by the chain rule its gradients are
    # ∂/∂s|torch = ∂/∂s|ours − z·∂/∂β|ours and ∂/∂z|torch = −s·∂/∂β|ours.
    torch.manual_seed(3)
    x = away_from_the_grid_ends(torch.randn(40) * 2, 0.3, -5, 10).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    scale, zero_point = 0.3, 5.0
    s = torch.tensor(scale, requires_grad=True)
    beta = torch.tensor(-scale * zero_point, requires_grad=True)
    s_ref = torch.tensor([scale], requires_grad=True)
    z_ref = torch.tensor([zero_point], requires_grad=True)
    upstream = torch.randn(len(x))
    ours = lsq_plus_quantize(x, s, beta, 0, 15, 0.5)
    theirs = torch._fake_quantize_learnable_per_tensor_affine(
        x_ref, s_ref, z_ref, 0, 15, 0.5
    )
    ours.backward(upstream)
    theirs.backward(upstream)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)  # s·(1/s)
    torch.testing.assert_close(
        (s.grad - zero_point * beta.grad).reshape(1), s_ref.grad, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        (-scale * beta.grad).reshape(1), z_ref.grad, rtol=1e-5, atol=1e-5
    )


def test_lsq_weight_initializes_the_step_and_gradient_scale_as_the_paper():
    weight = torch.tensor([[0.5, -0.5, 1.5, -1.0], [0.1, 0.1, -0.1, 0.1]], dtype=F64)
    per_tensor = LSQWeight(bits=3, axis=None)  # Q_P = 3
    per_tensor.initialize(weight)
    mean_abs = (0.5 + 0.5 + 1.5 + 1.0 + 0.4) / 8
    assert per_tensor.step.item() == pytest.approx(2 * mean_abs / math.sqrt(3))
    assert per_tensor.g == pytest.approx(1 / math.sqrt(8 * 3))
    per_channel = LSQWeight(bits=3, axis=0)
    per_channel.initialize(weight)
    expected = torch.tensor([0.875, 0.1], dtype=F64) * 2 / math.sqrt(3)
    torch.testing.assert_close(per_channel.step.detach(), expected)
    assert per_channel.g == pytest.approx(1 / math.sqrt(4 * 3))
    assert isinstance(per_channel.step, torch.nn.Parameter)


def test_lsq_activation_grid_is_unsigned_for_relu_outputs_and_signed_otherwise():
    relu = LSQActQuant(bits=4)
    x = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    assert torch.equal(relu(x), x)  # the first batch initializes and passes through
    assert (relu.qmin, relu.qmax) == (0, 15) and not relu.signed
    assert relu.step.item() == pytest.approx(2 * 1.0 / math.sqrt(15))
    assert relu.g == pytest.approx(
        1 / math.sqrt(3 * 15)
    )  # N_F = 3 features per example
    signed = LSQActQuant(bits=4)
    signed(torch.tensor([[-1.0, 1.0]]))
    assert (signed.qmin, signed.qmax) == (-8, 7) and signed.signed
    assert signed.step.item() == pytest.approx(2 * 1.0 / math.sqrt(7))


def test_lsq_plus_initializes_from_the_least_mse_range_with_an_integer_offset():
    act = LSQPlusActQuant(bits=2)
    act(torch.linspace(-1.0, 3.0, 401))
    zero_point = -act.offset.item() / act.step.item()
    assert zero_point == pytest.approx(round(zero_point), abs=1e-5)
    assert 0 < act.step.item() <= 4.0 / 3 + 1e-6  # at most the min-max step
    assert act.offset.item() < 0  # the grid reaches below 0


@pytest.mark.parametrize("axis", [None, 0])
def test_exported_weight_quantizer_reproduces_the_trained_weight_exactly(axis):
    torch.manual_seed(4)
    weight = torch.randn(5, 3, 2, 2)
    quant = LSQWeight(bits=3, axis=axis)
    quant.initialize(weight)
    stored, frozen = quant.export(weight)
    assert isinstance(frozen, FakeQuantWeight) and frozen.axis == axis
    assert torch.equal(frozen(stored), quant(weight).detach())
    assert torch.equal(FakeQuantWeight.unpack(frozen.pack(stored)), stored)
    torch.testing.assert_close(frozen.qparams(stored)[0], quant.step.detach())


@pytest.mark.parametrize("cls", [LSQActQuant, LSQPlusActQuant])
def test_exported_activation_quantizer_is_a_frozen_actquant_with_the_same_output(cls):
    torch.manual_seed(5)
    act = cls(bits=3)
    act(torch.relu(torch.randn(8, 6)))
    frozen = act.export()
    assert (
        isinstance(frozen, ActQuant) and frozen.observer is None and frozen.quantizing
    )
    x = torch.randn(8, 6) * 2
    torch.testing.assert_close(frozen(x), act(x).detach(), rtol=0, atol=1e-6)


def test_lsq_plus_export_rounds_the_offset_to_an_integer_zero_point():
    act = LSQPlusActQuant(bits=4)
    act(torch.linspace(-1, 1, 50))
    act.step.data = torch.tensor(0.1)
    act.offset.data = torch.tensor(-0.33)  # -β/s = 3.3 -> z = 3
    frozen = act.export()
    assert int(frozen.zero_point) == 3
    assert frozen.scale.item() == pytest.approx(0.1)


def test_a_one_bit_weight_grid_is_refused():
    with pytest.raises(
        ValueError, match=r"weight_bits must be an int in \[2, 16\], got 1"
    ):
        LSQWeight(bits=1)
    with pytest.raises(TypeError, match="weight_bits must be an int"):
        LSQWeight(bits=4.0)


def test_one_bit_signed_activations_are_refused_on_the_first_batch():
    act = LSQActQuant(bits=1)
    act(torch.tensor([0.0, 2.0]))  # unsigned: one bit is fine
    with pytest.raises(
        ValueError, match=r"act_bits must be an int in \[2, 16\].*negative"
    ):
        LSQActQuant(bits=1, name="conv1")(torch.tensor([-1.0, 2.0]))


@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan")])
def test_a_step_driven_to_zero_or_below_raises_instead_of_clamping(bad):
    quant = LSQWeight(bits=4, axis=None)
    quant.initialize(torch.randn(4, 4))
    quant.step.data = torch.tensor(bad)
    with pytest.raises(
        ValueError, match="LSQ step of a weight must stay finite and > 0"
    ):
        quant(torch.randn(4, 4))
    with pytest.raises(ValueError, match="must stay finite and > 0"):
        quant.export(torch.randn(4, 4))
    act = LSQActQuant(bits=4, name="fc1")
    act(torch.rand(2, 3))
    act.step.data = torch.tensor(bad)
    with pytest.raises(ValueError, match="activation 'fc1' must stay finite and > 0"):
        act(torch.rand(2, 3))
