"""recalibrate_batchnorm against the batch statistics computed directly."""

import pytest
import torch
from torch import nn


def test_recalibrate_batchnorm_gives_the_average_of_the_batch_statistics():
    from minicompress.pruning.structured import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
    batches = [torch.randn(4, 1, 5, 5) + i for i in range(2)]
    recalibrate_batchnorm(model, [(b, None) for b in batches])
    # reference: the conv outputs computed directly, per-batch mean and unbiased variance
    outputs = [nn.functional.conv2d(b, model[0].weight, model[0].bias) for b in batches]
    means = torch.stack([o.mean((0, 2, 3)) for o in outputs]).mean(0)
    variances = torch.stack(
        [o.transpose(0, 1).flatten(1).var(1) for o in outputs]
    ).mean(0)
    torch.testing.assert_close(model[1].running_mean, means.detach())
    torch.testing.assert_close(model[1].running_var, variances.detach())
    assert not model.training and model[1].momentum == 0.1
    with pytest.raises(ValueError, match="batches is empty"):
        recalibrate_batchnorm(model, [])
