"""Feature taps against direct calls of the tapped submodules, and the channel adapter."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from minicompress import models
from minicompress.distillation import FeatureTaps, channel_adapter


def _no_hooks(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
    )


def test_a_tap_captures_what_the_submodule_computes():
    model = models.build("resnet8").eval()
    x = torch.randn(2, 1, 28, 28)
    with FeatureTaps(model, ["layer2", "fc:input"]) as taps:
        logits = model(x)
    # The reference: the same submodules called by hand, in forward's order.
    with torch.no_grad():
        stem = model.relu(model.bn1(model.conv1(x)))
        layer2 = model.layer2(model.layer1(stem))
        embedding = torch.flatten(model.pool(model.layer3(layer2)), 1)
    assert_close(taps["layer2"], layer2, rtol=0, atol=0)
    assert_close(taps["fc:input"], embedding, rtol=0, atol=0)
    assert_close(model.fc(taps["fc:input"]), logits, rtol=0, atol=0)
    assert taps.calls == {"layer2": 1, "fc:input": 1}


def test_hooks_are_gone_after_the_block_even_after_an_error():
    model = models.build("lenet5")
    with FeatureTaps(model, "conv2") as taps:
        assert not _no_hooks(model)
        model(torch.randn(1, 1, 28, 28))
    assert _no_hooks(model) and taps["conv2"].shape == (1, 16, 10, 10)
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureTaps(model, ["conv1", "fc1:input"]):
            raise RuntimeError("boom")
    assert _no_hooks(model)


def test_a_tap_before_an_inplace_relu_keeps_the_pre_activation():
    # BatchNorm's output is overwritten by the in-place ReLU after it; the tap keeps a copy.
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True))
    model.eval()
    x = torch.randn(2, 1, 6, 6)
    with FeatureTaps(model, "1") as taps:
        model(x)
    with torch.no_grad():
        expected = model[1](model[0](x))
    assert_close(taps["1"], expected, rtol=0, atol=0)
    assert (taps["1"] < 0).any()  # pre-activation values survived the ReLU


def test_gradients_flow_through_a_tapped_student_tensor():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with FeatureTaps(model, "1") as taps:
        model(torch.randn(5, 3))
    taps["1"].pow(2).sum().backward()
    assert model[0].weight.grad is not None and model[2].weight.grad is None


def test_a_module_reused_in_forward_counts_every_call():
    model = models.build("lenet5")  # one nn.ReLU object after conv1, conv2, fc1 and fc2
    with FeatureTaps(model, "relu") as taps:
        model(torch.randn(1, 1, 28, 28))
    assert taps.calls["relu"] == 4


def test_a_misspelt_layer_is_an_error_that_lists_close_names():
    model = models.build("resnet8")
    with pytest.raises(
        ValueError, match=r"'layer4'.*closest: 'layer3', 'layer2', 'layer1'"
    ):
        FeatureTaps(model, ["layer1", "layer4"])
    with pytest.raises(ValueError, match="ends in ':output_'"):
        FeatureTaps(model, "layer1:output_")
    with pytest.raises(TypeError, match="paths must hold str"):
        FeatureTaps(model, ["layer1", 3])
    assert _no_hooks(model)


def test_a_tap_that_did_not_run_says_so():
    model = models.build("resnet8")
    with FeatureTaps(model, "layer1") as taps:
        pass
    with pytest.raises(ValueError, match="'layer1' of ResNet did not run"):
        taps["layer1"]


def test_the_adapter_maps_channels_with_a_1x1_conv_or_a_linear_layer():
    conv = channel_adapter((8, 16, 7, 7), (8, 64, 7, 7))
    linear = channel_adapter((8, 16), (8, 32))
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (16, 64)
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (32, 16)
    # a 1x1 convolution is the same linear map applied at every position
    x = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    conv = conv.double()
    by_hand = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    assert_close(
        conv(x), by_hand + conv.bias[None, :, None, None], rtol=1e-12, atol=1e-12
    )


def test_the_adapter_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = channel_adapter((1, 4, 2, 2), (1, 8, 2, 2), seed=3)
    b = channel_adapter((1, 4, 2, 2), (1, 8, 2, 2), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.weight, b.weight) and a.weight.abs().max() <= 0.5  # 1/sqrt(4)


def test_the_adapter_refuses_incompatible_shapes():
    with pytest.raises(ValueError, match="changes channels, not spatial size"):
        channel_adapter((8, 16, 14, 14), (8, 64, 7, 7))
    with pytest.raises(ValueError, match=r"student \(8, 16, 7, 7\), teacher \(8, 64\)"):
        channel_adapter((8, 16, 7, 7), (8, 64))
