"""Small models and masks the structured-pruning tests share."""

import copy

import torch
from torch import nn

from minicompress import models
from minicompress.pruning.dependency import build_dependency_graph

__all__ = [
    "X",
    "X28",
    "GAMMAS",
    "tiny_darknet",
    "kept",
    "zero_scale_model",
    "zero_channels",
    "randomize_bn",
]


X = torch.zeros(1, 1, 8, 8)
X28 = torch.zeros(1, 1, 28, 28)


# A Darknet with one stage: stem (4) -> down (8) -> unit0 (conv1 4, conv2 8) -> unit1 (4, 8).
GAMMAS = {
    "stem.1": [0.9, 0.01, 0.5, 0.02],
    "stages.0.down.1": [0.8, 0.7, 0.03, 0.04, 0.6, 0.05, 0.9, 0.02],
    "stages.0.unit0.conv1.1": [0.01, 0.3, 0.02, 0.4],
    "stages.0.unit0.conv2.1": [0.05, 0.6, 0.01, 0.01, 0.02, 0.03, 0.8, 0.03],
    "stages.0.unit1.conv1.1": [0.2, 0.01, 0.03, 0.5],
    "stages.0.unit1.conv2.1": [0.01, 0.02, 0.01, 0.5, 0.7, 0.03, 0.04, 0.02],
}


def tiny_darknet(gammas=GAMMAS, seed=0):
    torch.manual_seed(seed)
    model = models.DarknetTiny(stem=4, widths=(8,), units=(2,)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, values in gammas.items():
            norm = model.get_submodule(name)
            norm.weight.copy_(torch.tensor(values))
            norm.bias.copy_(torch.rand(len(values), generator=generator) - 0.5)
            norm.running_var.copy_(torch.rand(len(values), generator=generator) + 0.5)
    return model


def kept(model, plan, layer):
    graph = build_dependency_graph(model, X)
    group = graph.layers[layer].out_group[0].item()
    return plan.keep[group].int().tolist() if group in plan.keep else None


def zero_scale_model():
    """darknet_tiny whose last stage has channels 0-9 at gamma = 0 in every member of its
    residual group (beta != 0), and whose last unit has gamma = 0 on its 3x3 conv: what they
    feed is read by 1x1 convs and by the pooled classifier only, so removal is exact."""
    torch.manual_seed(0)
    model = models.build("darknet_tiny").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
        for name in ("down", "unit0.conv2", "unit1.conv2"):
            model.stages[2].get_submodule(name)[1].weight[:10] = 0
    return model


def zero_channels(model, graph, keep, beta=True):
    """The masked model: removed channels get zero filters, zero BN scale (and shift)."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for index, mask in keep.items():
            group = graph.groups[index]
            for name in group.sources + group.norms:
                module = masked.get_submodule(name)
                removed = ~mask[graph.layers[name].out_channel]
                module.weight[removed] = 0
                if module.bias is not None and (beta or name in group.sources):
                    module.bias[removed] = 0
    return masked


def randomize_bn(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
    return model.eval()
