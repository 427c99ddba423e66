"""Sparsity training for Network Slimming: an L1 penalty on every BatchNorm scale, applied as
its subgradient after each backward pass (a `train.fit` callback).

    Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017,
    arXiv:1708.06519, section 3.

    L = L_task + s * sum_gamma |gamma|    ->    grad(gamma) += s * sign(gamma)

The schedules of tanluren/yolov3-channel-and-layer-pruning (README, "sparsity strategies"):
constant s; global decay (s / 100 after half of training); local decay (after half, full s on
the 85 % smallest |gamma|, s / 100 on the rest).

Entry point: `BNSparsity(s=1e-3, schedule="constant", total_steps=None, layers=None)`.
"""

import torch
from torch import nn

from .. import _checks

__all__ = ["BNSparsity", "SCHEDULES"]

SCHEDULES = ("constant", "global_decay", "local_decay")
# tanluren's decays start half-way through sparsity training and divide s by 100; local decay
# keeps full s on the 85 % smallest |gamma| ("the largest ratio that pruned with almost no
# loss" under a constant s) and relieves the 15 % largest.
_DECAY_START, _DECAY_FACTOR, _LOCAL_FRACTION = 0.5, 0.01, 0.85


class BNSparsity:
    """Sparsity training as a `train.fit` callback: after each backward pass, add the L1
    subgradient s * sign(gamma) to the gradient of every BatchNorm scale.

    Liu et al., ICCV 2017, arXiv:1708.06519, section 3: L = L_task + s * sum_gamma |gamma|.

    Args:
        s: the penalty weight, a float >= 0 (the paper grid-searches 1e-3, 1e-4, 1e-5; the YOLO
            repositories default to 1e-3). Its effect depends on the optimizer: with SGD the
            step on gamma is lr * s; Adam rescales each gradient, so s counts relative to the
            size of the task gradient.
        schedule: "constant"; "global_decay" (s / 100 after half of `total_steps`);
            "local_decay" (after half, s on the 85 % of channels with the smallest |gamma|,
            s / 100 on the rest). The decays trade compression for accuracy.
        total_steps: optimizer steps of the run, required by the decays (epochs * batches).
        layers: names of the BatchNorm modules to penalise (a str or a list of str), or None
            for all of them.

    Example:
        >>> net = models.build("vgg_small", widths=(4, "M", 8))  # every gamma starts at 1
        >>> sgd, batches = torch.optim.SGD(net.parameters(), lr=0.1), [(torch.ones(4, 1, 8, 8), torch.zeros(4).long())]
        >>> _ = train.fit(net, batches, 10, optimizer=sgd, progress=False, callbacks=[BNSparsity(0.5)])
        >>> float(net.features[0][1].weight.detach().abs().mean()) < 0.6  # 10 steps of lr * s = 0.05
        True
    """

    def __init__(self, s=1e-3, schedule="constant", total_steps=None, layers=None):
        s = _checks.check_real(s, "s", low=0)
        _checks.check_choice(schedule, "schedule", SCHEDULES)
        if schedule != "constant" and total_steps is None:
            raise ValueError(
                f"schedule {schedule!r} needs total_steps, an int >= 1, got None"
            )
        if schedule == "constant" and total_steps is not None:
            raise ValueError("total_steps is used by the decaying schedules only")
        if total_steps is not None:
            _checks.check_int(total_steps, "total_steps", low=1)
        self.s, self.schedule, self.total_steps = s, schedule, total_steps
        # A single name is one layer ("bn1", not "b", "n", "1"); the names are checked
        # against the model, as BatchNorms, at every step before any gradient changes.
        self.layers = (
            None if layers is None else list(_checks.check_names(layers, "layers"))
        )

    def after_backward(self, model, step):
        norms = self._norms(model)
        decayed = (
            self.schedule != "constant" and step >= _DECAY_START * self.total_steps
        )
        threshold = None
        if decayed and self.schedule == "local_decay":
            gammas = torch.cat([m.weight.detach().abs().flatten() for m in norms])
            threshold = torch.quantile(gammas.float(), _LOCAL_FRACTION)
        for module in norms:
            gamma = module.weight
            if gamma.grad is None:
                continue
            s = torch.full_like(gamma, self.s)
            if decayed and threshold is None:
                s *= _DECAY_FACTOR
            elif threshold is not None:  # relieve the largest 15 %
                s = torch.where(gamma.detach().abs() > threshold, s * _DECAY_FACTOR, s)
            gamma.grad.add_(s * torch.sign(gamma.detach()))

    def _norms(self, model):
        if self.layers is None:
            return [
                m
                for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
                and m.weight is not None
            ]
        kinds = (nn.modules.batchnorm._BatchNorm,)
        return list(
            _checks.check_module_names(model, self.layers, "layers", kinds).values()
        )

    def __repr__(self):
        return f"BNSparsity(s={self.s}, schedule={self.schedule!r}, total_steps={self.total_steps})"
