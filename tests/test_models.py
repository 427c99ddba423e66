import pytest
import torch
import torch.fx

from minicompress import models


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("in_channels, size", [(1, 28), (1, 32), (3, 32), (3, 28)])
def test_every_model_takes_28_and_32_pixel_inputs(name, in_channels, size):
    model = models.build(name, num_classes=7, in_channels=in_channels)
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_traces_with_fx(name):
    model = models.build(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(traced(x), model(x))


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet300_has_the_papers_weight_count():
    # 784*300 + 300 + 300*100 + 100 + 100*10 + 10, Han et al. 2015 Table 2 ("267K").
    assert count(models.build("lenet300")) == 266_610


def test_lenet5_has_the_classic_parameter_count():
    # conv 6x(1x5x5)+6, conv 16x(6x5x5)+16, fc 400x120+120, 120x84+84, 84x10+10
    assert (
        count(models.build("lenet5")) == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    )


def test_resnet20_is_about_the_papers_027_million_parameters():
    # He et al. 2016 Table 6: 0.27M (their option A shortcuts; our projections add ~3k).
    assert 0.26e6 < count(models.build("resnet20")) < 0.28e6


def test_resnet_depths():
    def convs(m):
        return sum(
            isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)
            for x in m.modules()
        )

    # depth = 6n + 2 counts the 3x3 convs plus the linear layer
    assert convs(models.build("resnet8")) + 1 == 8
    assert convs(models.build("resnet20")) + 1 == 20


def test_darknet_tiny_follows_darknet53_blocks():
    model = models.build("darknet_tiny")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)  # BN's beta is the bias
    assert all(
        isinstance(m[2], torch.nn.LeakyReLU)
        for m in model.modules()
        if isinstance(m, models.ConvBNAct)
    )
    for stage in model.stages:
        assert stage.down[0].stride == (2, 2)
        for unit in list(stage)[1:]:
            assert unit.conv1[0].kernel_size == (1, 1) and unit.conv2[
                0
            ].kernel_size == (3, 3)
            assert unit.conv1[0].out_channels * 2 == unit.conv2[0].out_channels


def test_lenet300_input_size_option_fits_8x8_digits():
    model = models.build("lenet300", input_size=8)
    assert model.features[0].in_features == 64
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_unknown_model_lists_the_names():
    with pytest.raises(
        ValueError, match="name must be one of .*'lenet5'.*'darknet_tiny'; got 'alexnet'"
    ):
        models.build("alexnet")


def test_unknown_option_is_not_silently_ignored():
    with pytest.raises(TypeError):
        models.build("lenet5", width=2)


@pytest.mark.parametrize(
    "arg", [{"num_classes": 0}, {"in_channels": -1}, {"num_classes": 2.0}]
)
def test_bad_sizes_are_rejected(arg):
    with pytest.raises((TypeError, ValueError), match="must be an int >= 1"):
        models.build("lenet5", **arg)
