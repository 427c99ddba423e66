"""Small reference models that every method in the collection is measured on.

    lenet300      LeNet-300-100, the fully connected net of LeCun et al. 1998 and Han et al. 2015
    lenet5        LeNet-5 (conv 6 -> conv 16 -> fc 120 -> fc 84), LeCun et al. 1998
    vgg_small     a VGG-style stack of conv-BN-ReLU blocks, Simonyan & Zisserman 2015
    resnet8/20    CIFAR-style ResNets of basic blocks, He et al. 2016 (arXiv:1512.03385), section 4.2
    darknet_tiny  a Darknet-53-style residual net (Redmon & Farhadi 2018, arXiv:1804.02767):
                  conv-BN-LeakyReLU everywhere, a stride-2 conv entering each stage, residual units
                  of a 1x1 conv that halves the channels and a 3x3 conv that restores them

All of them take 28x28 (MNIST) and 32x32 (CIFAR) inputs with any number of channels; the
convolutional ones end in adaptive pooling so the classifier does not depend on the image size.
Entry point: `build(name, num_classes=10, in_channels=1, **options)`.
"""

import torch
from torch import nn

from . import _checks

__all__ = [
    "MODELS",
    "build",
    "LeNet300",
    "LeNet5",
    "VGGSmall",
    "ResNet",
    "BasicBlock",
    "DarknetTiny",
    "ConvBNAct",
    "DarknetUnit",
]


class LeNet300(nn.Module):
    """LeNet-300-100: input -> 300 -> 100 -> classes, ReLU between (266,610 weights on MNIST).

    Inputs of another size are average-pooled to `input_size` x `input_size` first; the pooling
    is the identity when the image already has that size.
    """

    def __init__(self, num_classes=10, in_channels=1, input_size=28, hidden=(300, 100)):
        _check_sizes(num_classes, in_channels)
        input_size = _checks.check_int(input_size, "input_size", low=1)
        hidden = _checks.check_ints(hidden, "hidden", low=1)
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(input_size)
        self.flatten = nn.Flatten()
        widths = [in_channels * input_size * input_size, *hidden]
        layers = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.flatten(self.pool(x))  # (B, C, H, W) -> (B, C * input_size^2)
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling, the common modern reading of LeCun et al. 1998.

    conv1 pads by 2 so that a 28x28 MNIST digit is treated like the paper's 32x32 input.
    """

    def __init__(self, num_classes=10, in_channels=1):
        _check_sizes(num_classes, in_channels)
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(
            5
        )  # identity on 28x28 inputs; 6x6 -> 5x5 on 32x32
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))  # (B, 6, 14, 14) on 28x28
        x = self.pool(self.relu(self.conv2(x)))  # (B, 16, 5, 5)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 400)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BN's beta plays that role) -> BatchNorm -> activation."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, act=None):
        _check_sizes(None, in_channels, out_channels=out_channels)
        _checks.check_int(kernel_size, "kernel_size", low=1)
        _checks.check_int(stride, "stride", low=1)
        if act is not None:
            _checks.check_module(act, "act")
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            act if act is not None else nn.ReLU(inplace=True),
        )


class VGGSmall(nn.Module):
    """A VGG-style net: blocks of conv-BN-ReLU, max-pool between blocks, global pool, linear."""

    def __init__(
        self,
        num_classes=10,
        in_channels=1,
        widths=(32, 32, "M", 64, 64, "M", 128, 128, "M"),
    ):
        _check_sizes(num_classes, in_channels)
        _checks.check_ints(
            [w for w in _listed(widths, "widths") if w != "M"] or [1], "widths", low=1
        )
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(ConvBNAct(channels, width))
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = torch.flatten(self.pool(self.features(x)), 1)  # (B, C_last)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; a 1x1 conv-BN projection when the shape changes."""

    def __init__(self, in_channels, out_channels, stride=1):
        _check_sizes(None, in_channels, out_channels=out_channels)
        _checks.check_int(stride, "stride", low=1)
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            # He et al.'s option B: project the shortcut so it can be added.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, three stages of `blocks` basic blocks (16, 32, 64
    channels, stride 2 entering stages 2 and 3), global pooling, linear. Depth = 6 * blocks + 2."""

    def __init__(self, blocks, num_classes=10, in_channels=1, widths=(16, 32, 64)):
        _checks.check_int(blocks, "blocks", low=1)
        _check_sizes(num_classes, in_channels)
        if len(_checks.check_ints(widths, "widths", low=1)) != 3:
            raise ValueError(
                f"widths must hold the widths of the three stages, got {widths!r}"
            )
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            units = [
                BasicBlock(
                    channels if j == 0 else width, width, stride if j == 0 else 1
                )
                for j in range(blocks)
            ]
            stages.append(nn.Sequential(*units))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)
        return self.fc(torch.flatten(self.pool(x), 1))


class DarknetUnit(nn.Module):
    """Darknet-53 residual unit: 1x1 conv to C/2, 3x3 conv back to C, added to the input."""

    def __init__(self, channels):
        _checks.check_int(channels, "channels", low=2)  # the 1x1 conv halves them
        super().__init__()
        self.conv1 = ConvBNAct(
            channels, channels // 2, 1, act=nn.LeakyReLU(0.1, inplace=True)
        )
        self.conv2 = ConvBNAct(
            channels // 2, channels, 3, act=nn.LeakyReLU(0.1, inplace=True)
        )

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class DarknetTiny(nn.Module):
    """A small Darknet-53: a 3x3 stem, then stages that each open with a stride-2 3x3 conv
    (`down`) followed by `units[i]` residual units. All convs are conv-BN-LeakyReLU(0.1)."""

    def __init__(
        self,
        num_classes=10,
        in_channels=1,
        stem=16,
        widths=(32, 64, 128),
        units=(1, 2, 2),
    ):
        _check_sizes(num_classes, in_channels)
        _checks.check_int(stem, "stem", low=1)
        _checks.check_ints(widths, "widths", low=2)  # a unit's 1x1 conv halves them
        _checks.check_ints(units, "units", low=0)
        super().__init__()
        if len(widths) != len(units):
            raise ValueError(
                f"widths and units must have the same length, got {len(widths)} and {len(units)}"
            )
        leaky = lambda: nn.LeakyReLU(0.1, inplace=True)  # noqa: E731
        self.stem = ConvBNAct(in_channels, stem, 3, act=leaky())
        stages, channels = [], stem
        for width, count in zip(widths, units):
            stage = nn.Sequential()
            stage.add_module(
                "down", ConvBNAct(channels, width, 3, stride=2, act=leaky())
            )
            for j in range(count):
                stage.add_module(f"unit{j}", DarknetUnit(width))
            stages.append(stage)
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.stages(
            self.stem(x)
        )  # (B, widths[-1], H / 2^len(widths), W / 2^len(widths))
        return self.fc(torch.flatten(self.pool(x), 1))


MODELS = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "vgg_small": VGGSmall,
    "resnet8": lambda **kw: ResNet(blocks=1, **kw),
    "resnet20": lambda **kw: ResNet(blocks=3, **kw),
    "darknet_tiny": DarknetTiny,
}


def build(name, num_classes=10, in_channels=1, **options):
    """Build reference model `name`, freshly initialised.

    Args:
        name: one of `MODELS`: "lenet300", "lenet5", "vgg_small", "resnet8", "resnet20",
            "darknet_tiny".
        num_classes: size of the output, an int >= 1.
        in_channels: channels of the input image (1 for MNIST, 3 for CIFAR-10).
        **options: model-specific keywords, e.g. `input_size=8` for lenet300 on the 8x8
            digits, `widths=...` for vgg_small / resnet / darknet_tiny. An unknown keyword
            is a TypeError, never silently dropped.

    Example:
        >>> model = build("lenet5")
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _checks.check_choice(name, "name", MODELS)
    _check_sizes(num_classes, in_channels)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)


def _check_sizes(num_classes, in_channels, **more):
    if num_classes is not None:
        _checks.check_int(num_classes, "num_classes", low=1)
    _checks.check_int(in_channels, "in_channels", low=1)
    for name, value in more.items():
        _checks.check_int(value, name, low=1)


def _listed(value, name):
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{name} must be a non-empty list or tuple, got {value!r}")
    return value
