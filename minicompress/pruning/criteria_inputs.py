"""What the channel criteria read from a model, group by group (see `criteria`).

    filters         (C, K): every weight row that produces channel c, side by side over the
                    group's coupled layers (zeros where a layer has fewer rows for c)
    scales          (C, L): the gammas of the group's BatchNorms
    gate_gradients  (B, C): per batch, dL/dz_c for a gate z_c = 1 on each channel
    uniform         (C,): draws from a generator seeded with `seed`

Weights, scales and batch inputs are checked finite: a NaN would decide a ranking silently.
"""

import copy

import torch

from .. import _checks

__all__ = ["CriterionInputs"]


class CriterionInputs:
    """What the criteria cores read, one method per kind of input; each takes a list of
    channel groups and returns {group index: tensor}."""

    def __init__(self, model, graph, batch, loss_fn, seed):
        self.model, self.graph = model, graph
        self.batch, self.loss_fn, self.seed = batch, loss_fn, seed

    def filters(self, groups):
        return {g.index: self._side_by_side(g, g.sources, _weight_rows) for g in groups}

    def scales(self, groups):
        return {g.index: self._side_by_side(g, g.norms, _scale_column) for g in groups}

    def uniform(self, groups):
        generator = torch.Generator().manual_seed(self.seed)
        return {g.index: torch.rand(g.size, generator=generator) for g in groups}

    def gate_gradients(self, groups):
        # Each channel's gate sits on the affine output of each of its producing layers: the
        # BatchNorm right after it, else the layer itself; a residual group's gates close
        # together, so their gradients add.
        batches = _check_batches(self.batch)
        work = copy.deepcopy(self.model).eval()  # gradients stay off the caller's model
        modules = dict(work.named_modules())
        device = next(work.parameters()).device
        rows = {g.index: [] for g in groups}
        for inputs, targets in batches:
            work.zero_grad(set_to_none=True)
            outputs = _checks.forward(work, inputs.to(device), "the batch inputs")
            self.loss_fn(outputs, targets.to(device)).backward()
            for group in groups:
                gate = torch.zeros(group.size, dtype=torch.float64)  # dL/dz per channel
                for source in group.sources:
                    name = self.graph.layers[source].norm or source
                    channel = self.graph.layers[name].out_channel
                    for param in (modules[name].weight, modules[name].bias):
                        if param is not None and param.grad is not None:
                            gw = (param.grad * param).detach().reshape(len(channel), -1)
                            gate.index_add_(0, channel, gw.sum(1).double().cpu())
                rows[group.index].append(gate)
        return {index: torch.stack(gates) for index, gates in rows.items()}  # (B, C)

    def _side_by_side(self, group, names, columns):
        """(C, sum of m_l * K_l): every row of layer l that belongs to channel c, in row c,
        zeros where a layer has fewer rows for a channel (after a cat it has none for the
        channels of the other tensor; a grouped conv has one row per group for each)."""
        parts = []
        for name in names:
            tensor = columns(self.model.get_submodule(name), name)  # (rows, K) float64
            channel = self.graph.layers[name].out_channel  # (rows,)
            order = torch.argsort(channel, stable=True)
            ranked = channel[order]
            slot = torch.empty_like(
                channel
            )  # the index of each row among its channel's rows
            slot[order] = torch.arange(len(channel)) - torch.searchsorted(
                ranked, ranked
            )
            block = torch.zeros(
                group.size, int(slot.max()) + 1, tensor.shape[1], dtype=torch.float64
            )
            block[channel, slot] = tensor
            parts.append(block.flatten(1))
        return torch.cat(parts, 1)


def _weight_rows(module, name):
    weight = module.weight.detach()
    _checks.check_tensor(weight, f"the weight of {name!r}", finite=True)
    return weight.flatten(1).double().cpu()  # (C_out, K)


def _scale_column(module, name):
    gamma = module.weight.detach()
    _checks.check_tensor(gamma, f"the BatchNorm scale of {name!r}", finite=True)
    return gamma.double().cpu().view(-1, 1)  # (C, 1)


def _check_batches(batch):
    batches = [batch] if isinstance(batch, tuple) else batch
    if not isinstance(batches, list) or not batches:
        raise TypeError(
            "batch must be an (inputs, targets) pair or a non-empty list of such pairs, "
            f"got {type(batch).__name__}"
        )
    for pair in batches:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"batch must hold (inputs, targets) pairs, got {type(pair).__name__}"
            )
        _checks.check_tensor(pair[0], "batch inputs", finite=True)
        _checks.check_tensor(pair[1], "batch targets")
    return batches
