"""Every public function of data, models, train, measure, study and pruning, fed bad arguments:
a TypeError for the wrong kind of value, a ValueError for a wrong value, the argument named in
the message, and the models (and torch's global random state) unchanged afterwards.

The table's format is `tests/bad_input.py`; a new public function joins the table (the last
test fails for a public name that has no row and is not listed in `CORES` with the reason)."""

import inspect
import math

import pytest
import torch
from bad_input import check, ids, sweep
from torch import nn

from minicompress import data, measure, models, study, train
from minicompress.pruning import (
    at_init,
    ln_structured,
    bn_sparsity,
    channel_selection,
    compensation,
    criteria,
    dependency,
    lottery,
    masks,
    n_m,
    recalibration,
    schedules,
    sensitivity,
    slim_variants,
    slimming,
    structured,
    surgery,
    unit_removal,
    unstructured,
)  # fmt: skip

X28, X8 = torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 8, 8)
NAN, INF = math.nan, math.inf
# The usual wrong kinds and values: each row replaces one argument of a valid call.
NOT_MODEL = [("model", "lenet5", TypeError), ("model", None, TypeError)]
NOT_INPUT = [("example_input", [1.0], TypeError), ("example_input", torch.zeros(1, 3, 28, 28), ValueError)]  # fmt: skip
FRACTION = [(1.5, ValueError), (-0.1, ValueError), (NAN, ValueError), ("half", TypeError), (None, TypeError)]  # fmt: skip


def fractions(name):
    return [(name, value, error) for value, error in FRACTION]


def lenet():
    return {"model": models.build("lenet5")}


def resnet():
    return {"model": models.build("resnet8")}


def darknet():
    return {"model": models.DarknetTiny(stem=4, widths=(8,), units=(2,)).eval()}


def nan_weight(build=lenet):
    def make():
        made = build()
        with torch.no_grad():
            next(made["model"].parameters()).view(-1)[0] = NAN
        return made

    return make


def graph_of(build):
    def make():
        made = build()
        return {
            **made,
            "graph": dependency.build_dependency_graph(made["model"], _input(made)),
        }

    return make


def _input(made):
    return X8 if isinstance(made["model"], models.DarknetTiny) else X28


def with_graph_of_another(build):
    def make():
        return {
            **build(),
            "graph": dependency.build_dependency_graph(build()["model"], X28),
        }

    return make


def batch(n=2, channels=1):
    return torch.zeros(n, channels, 28, 28), torch.zeros(n, dtype=torch.long)


LOADER = [batch()]
SAME_SIZE = models.build("lenet5")  # what a "pruning" that removes nothing returns
CASES = []

# -- data ---------------------------------------------------------------------------------------
CASES += sweep(data.input_shape, dict(name="digits"), [("name", "imagenet", ValueError), ("name", 3, ValueError)])  # fmt: skip
CASES += sweep(data.load, dict(name="digits"), [("name", "imagenet", ValueError), ("root", 3, TypeError), ("download", "yes", TypeError)])  # fmt: skip
CASES += sweep(
    data.loaders,
    dict(name="digits"),
    [
        ("name", None, ValueError), ("batch_size", 0, ValueError), ("batch_size", 2.0, TypeError),
        ("seed", "0", TypeError), ("root", 1, TypeError), ("download", 1, TypeError),
        ("augment", "no", TypeError), ("test_batch_size", -1, ValueError),
        ("num_workers", -1, ValueError), ("num_workers", 0.5, TypeError),
        ("validation", -1, ValueError), ("validation", 1.5, TypeError), ("validation", 5000, ValueError),
    ],
)  # fmt: skip
CASES += sweep(data.RandomShift, dict(dataset=[(torch.zeros(1, 4, 4), 0)]), [("dataset", 3, TypeError), ("max_shift", -1, ValueError), ("max_shift", 1.5, TypeError), ("seed", None, TypeError)])  # fmt: skip

# -- models -------------------------------------------------------------------------------------
CASES += sweep(models.build, dict(name="lenet5"), [("name", "alexnet", ValueError), ("num_classes", 0, ValueError), ("num_classes", 2.0, TypeError), ("in_channels", -1, ValueError)])  # fmt: skip
CASES += sweep(models.LeNet300, {}, [("num_classes", 0, ValueError), ("input_size", 0, ValueError), ("hidden", (300, 0), ValueError), ("hidden", 300, TypeError)])  # fmt: skip
CASES += sweep(models.LeNet5, {}, [("num_classes", 0, ValueError), ("in_channels", "1", TypeError)])  # fmt: skip
CASES += sweep(models.VGGSmall, {}, [("widths", (32, 0, "M"), ValueError), ("widths", 32, TypeError), ("num_classes", -2, ValueError)])  # fmt: skip
CASES += sweep(models.ResNet, dict(blocks=1), [("blocks", 0, ValueError), ("blocks", -1, ValueError), ("widths", (16, 32), ValueError), ("widths", (16, 0, 64), ValueError)])  # fmt: skip
CASES += sweep(models.BasicBlock, dict(in_channels=4, out_channels=4), [("in_channels", 0, ValueError), ("out_channels", 0, ValueError), ("stride", 0, ValueError)])  # fmt: skip
CASES += sweep(models.DarknetTiny, {}, [("stem", 0, ValueError), ("widths", (1,), ValueError), ("units", (1, -1, 2), ValueError), ("units", 2, TypeError), ("num_classes", 0, ValueError)])  # fmt: skip
CASES += sweep(models.ConvBNAct, dict(in_channels=2, out_channels=4), [("out_channels", 0, ValueError), ("kernel_size", 0, ValueError), ("stride", 1.5, TypeError), ("act", "relu", TypeError)])  # fmt: skip
CASES += sweep(models.DarknetUnit, dict(channels=8), [("channels", 1, ValueError), ("channels", "8", TypeError)])  # fmt: skip

# -- train --------------------------------------------------------------------------------------
CASES += sweep(
    train.seed_everything, {}, [("seed", "0", TypeError), ("seed", 1.5, TypeError)]
)
CASES += sweep(train.resolve_device, {}, [("device", "gpu9", ValueError), ("device", 3, TypeError), ("model", "lenet5", TypeError)])  # fmt: skip
CASES += sweep(
    train.progress_bar, dict(total=3), [("enabled", "yes", TypeError, "progress")]
)
CASES += sweep(
    train.fit,
    dict(train_loader=LOADER, epochs=1, progress=False),
    NOT_MODEL
    + [
        ("epochs", -1, ValueError), ("epochs", 1.0, TypeError), ("lr", 0, ValueError),
        ("lr", NAN, ValueError), ("lr", "fast", TypeError), ("optimizer", "adam", TypeError),
        ("optimizer", torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), ValueError),
        ("loss_fn", "ce", TypeError), ("progress", 1, TypeError), ("callbacks", [object()], TypeError),
        ("callbacks", "early", TypeError), ("schedule", "cosine", ValueError), ("device", "gpu9", ValueError),
        ("train_loader", [], ValueError), ("train_loader", [batch(channels=3)], ValueError, "inputs"),
        ("train_loader", [(torch.full((2, 1, 28, 28), NAN), torch.zeros(2).long())], ValueError, "inputs"),
        ("train_loader", [(torch.zeros(2, 1, 28, 28), torch.zeros(3).long())], ValueError, "targets"),
        ("loss_fn", lambda o, t: o, ValueError),
    ],
    models=lenet,
)  # fmt: skip
CASES += sweep(train.evaluate, dict(loader=LOADER), NOT_MODEL + [("loader", 3, TypeError), ("loader", [], ValueError, "no examples"), ("loader", [batch(channels=3)], ValueError, "inputs"), ("device", "gpu9", ValueError)], models=lenet)  # fmt: skip

# -- measure ------------------------------------------------------------------------------------
for fn in (measure.effective_state_dict, measure.count_params, measure.count_nonzero):
    CASES += sweep(fn, {}, NOT_MODEL, models=lenet)
CASES += sweep(
    measure.macs, dict(example_input=X28), NOT_MODEL + NOT_INPUT, models=lenet
)
CASES += sweep(measure.packed_tensors, {}, NOT_MODEL, models=lenet)
CASES += sweep(measure.framing_bytes, {}, NOT_MODEL + [("format", "zip", ValueError), ("format", None, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(measure.size_bytes, {}, NOT_MODEL + [("format", "zip", ValueError), ("format", None, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(measure.encode_tensor, dict(tensor=torch.zeros(2, 2), format="csr"), [("tensor", [1], TypeError), ("format", "coo", ValueError)])  # fmt: skip
CASES += sweep(measure.decode_tensor, dict(encoded=torch.zeros(2)), [("encoded", [1], TypeError), ("encoded", {"format": "coo"}, TypeError)])  # fmt: skip
CASES += sweep(measure.latency_ms, dict(example_input=X28), NOT_MODEL[:1] + NOT_INPUT + [("threads", 0, ValueError), ("min_run_time", NAN, ValueError), ("min_run_time", 0, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(measure.compare_latency, dict(models={"a": models.build("lenet5")}, example_input=X28), [("models", [], TypeError), ("models", {"a": 3}, TypeError), ("rounds", 0, ValueError), ("threads", 1.5, TypeError), ("min_run_time", INF, ValueError), ("example_input", {"b": X28}, ValueError)])  # fmt: skip
CASES += sweep(measure.summary, dict(example_input=X28), NOT_MODEL + NOT_INPUT + [("accuracy", 1.5, ValueError), ("accuracy", NAN, ValueError), ("threads", 0, ValueError), ("latency", "no", TypeError)], models=lenet)  # fmt: skip
CASES += sweep(measure.format_table, dict(rows={"a": {"params": 1}}), [("rows", [], ValueError), ("rows", "a", TypeError), ("baseline", "b", ValueError), ("baseline", 5, ValueError)])  # fmt: skip

# -- study --------------------------------------------------------------------------------------
CASES += sweep(
    study.run_study,
    dict(dataset="digits", model="lenet300", epochs=1, progress=False),
    [
        ("methods", ["magic"], ValueError), ("methods", 3, TypeError), ("dataset", "imagenet", ValueError),
        ("model", "alexnet", ValueError), ("epochs", 0, ValueError), ("batch_size", 0, ValueError),
        ("lr", -1.0, ValueError), ("lr", NAN, ValueError), ("seed", None, TypeError),
        ("device", "gpu9", ValueError), ("threads", 0, ValueError), ("progress", "no", TypeError),
        ("latency_rounds", 0, ValueError),
    ],
)  # fmt: skip
CASES += sweep(study.plot_study, dict(rows=[{"name": "a", "size_bytes": 1, "accuracy": 0.5}]), [("rows", "a", TypeError), ("rows", [{"name": "a"}], ValueError), ("path", 3, TypeError), ("title", 3, TypeError)])  # fmt: skip
CASES += sweep(study.build_for, dict(model="lenet5", dataset="digits"), [("model", "alexnet", ValueError), ("dataset", "imagenet", ValueError)])  # fmt: skip

# -- pruning: masks, unstructured, N:M, sensitivity, schedules, lottery, pruning at init ---------
CASES += sweep(masks.Mask, dict(mask=torch.ones(2, dtype=torch.bool)), [("mask", [True], TypeError)])  # fmt: skip
CASES += sweep(masks.prunable_layers, {}, NOT_MODEL + [("exclude", ["fc9"], ValueError), ("exclude", [3], TypeError), ("exclude", ["conv1", "conv2", "fc1", "fc2", "fc3"], ValueError)], models=lenet)  # fmt: skip
for fn in (masks.get_mask, masks.is_pruned):
    CASES += sweep(fn, dict(module=nn.Linear(2, 2)), [("module", "fc", TypeError), ("name", 3, TypeError), ("name", "gamma", ValueError)])  # fmt: skip
CASES += sweep(masks.apply_mask, dict(mask=torch.ones(2, 2, dtype=torch.bool)), [("module", None, TypeError), ("mask", [[1]], TypeError), ("mask", torch.ones(3), ValueError), ("name", "gamma", ValueError)], models=lambda: {"module": nn.Linear(2, 2)})  # fmt: skip
CASES += sweep(
    masks.sparsity, {}, NOT_MODEL + [("per_layer", "yes", TypeError)], models=lenet
)
CASES += sweep(masks.make_permanent, {}, NOT_MODEL, models=lenet)
CASES += sweep(
    unstructured.prune_unstructured,
    dict(amount=0.5),
    NOT_MODEL + fractions("amount")
    + [("method", "l2", ValueError), ("scope", "net", ValueError), ("exclude", ["fc9"], ValueError), ("seed", "0", TypeError)],
    models=lenet,
)  # fmt: skip
CASES += sweep(unstructured.prune_unstructured, dict(amount=0.5), [("amount", 0.5, ValueError, "weight of 'conv1'")], models=nan_weight())  # fmt: skip
CASES += sweep(unstructured.prune_by_scores, dict(scores={"fc3": torch.ones(10, 84)}, amount=0.5), NOT_MODEL + fractions("amount") + [("scores", {}, TypeError), ("scores", {"fc9": torch.ones(1)}, ValueError), ("scores", {"fc3": torch.ones(3)}, ValueError), ("scores", {"fc3": torch.full((10, 84), NAN)}, ValueError), ("scope", "all", ValueError)], models=lenet)  # fmt: skip
CASES += sweep(unstructured.prune_to_sparsity, dict(sparsity=0.5), NOT_MODEL + fractions("sparsity") + [("method", "taylor", ValueError), ("scope", 1, ValueError), ("seed", 0.5, TypeError)], models=lenet)  # fmt: skip
CASES += sweep(unstructured.drop_lowest, dict(scores=[torch.ones(3)], masks=[torch.ones(3, dtype=torch.bool)], k=1), [("scores", torch.ones(3), TypeError), ("scores", [], ValueError), ("scores", [torch.ones(4)], ValueError, "masks[0]"), ("scores", [torch.tensor([1.0, NAN, 0.0])], ValueError, "scores[0]"), ("masks", [torch.ones(3)], ValueError, "masks[0]"), ("k", 4, ValueError), ("k", -1, ValueError), ("k", 1.0, TypeError)])  # fmt: skip
CASES += sweep(ln_structured.prune_ln_structured, dict(amount=0.5), NOT_MODEL + fractions("amount") + [("n", 0, ValueError), ("n", NAN, ValueError), ("n", "2", TypeError), ("dim", 3, ValueError), ("dim", 0.0, TypeError)], models=lenet)  # fmt: skip
CASES += sweep(n_m.n_m_mask, dict(weight=torch.ones(2, 4)), [("weight", [1.0], TypeError), ("weight", torch.ones(4), ValueError), ("weight", torch.full((2, 4), NAN), ValueError), ("n", 5, ValueError), ("m", 0, ValueError), ("n", 2.0, TypeError)])  # fmt: skip
CASES += sweep(n_m.prune_n_m, {}, NOT_MODEL + [("n", 0, ValueError), ("m", "4", TypeError), ("exclude", "fc9", ValueError)], models=lenet)  # fmt: skip
CASES += sweep(
    n_m.prune_n_m, {}, [("n", 2, ValueError, "weight of 'conv1'")], models=nan_weight()
)
CASES += sweep(
    sensitivity.sensitivity_scan,
    dict(evaluate=lambda m: 0.5, amounts=(0.5,), progress=False),
    NOT_MODEL + [("evaluate", "accuracy", TypeError), ("amounts", (), ValueError), ("amounts", 0.5, TypeError), ("amounts", (1.0,), ValueError), ("method", "l1", ValueError), ("progress", None, TypeError), ("seed", "s", TypeError)],
    models=lenet,
)  # fmt: skip
CASES += sweep(schedules.prune_iteratively, dict(sparsity=0.5, rounds=2, fine_tune=lambda m: None), NOT_MODEL + fractions("sparsity") + [("rounds", 0, ValueError), ("fine_tune", None, TypeError), ("method", "l1", ValueError), ("exclude", ["fc9"], ValueError)], models=lenet)  # fmt: skip
CASES += sweep(schedules.polynomial_sparsity, dict(step=3, final_sparsity=0.9, begin_step=0, n_updates=4, frequency=5), [("step", -1, ValueError), ("step", 1.5, TypeError)] + fractions("final_sparsity") + [("initial_sparsity", 0.95, ValueError), ("n_updates", 0, ValueError), ("frequency", None, TypeError), ("begin_step", -1, ValueError)])  # fmt: skip
CASES += sweep(schedules.GradualPruning, dict(final_sparsity=0.9, begin_step=0, n_updates=4, frequency=5), [("method", "l1", ValueError), ("scope", "all", ValueError), ("exclude", [3], TypeError), ("seed", None, TypeError), ("frequency", 2.5, TypeError)])  # fmt: skip


def gradual_step(model, exclude):
    schedules.GradualPruning(0.5, 0, 2, 1, exclude=exclude).after_step(model, 0)


CASES += sweep(
    gradual_step, dict(exclude=()), [("exclude", ["fc9"], ValueError)], models=lenet
)
CASES += sweep(lottery.find_ticket, dict(train=lambda m, cb: None, sparsity=0.5), NOT_MODEL + fractions("sparsity") + [("train", None, TypeError), ("rounds", 0, ValueError), ("rewind_step", -1, ValueError), ("scope", "all", ValueError), ("exclude", ["fc9"], ValueError), ("on_round", 3, TypeError)], models=lenet)  # fmt: skip
CASES += sweep(lottery.find_ticket, dict(train=lambda m, cb: None, sparsity=0.5, rewind_step=5), [("rewind_step", 5, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(lottery.reinitialize, {}, NOT_MODEL + [("seed", "0", TypeError), ("seed", 1.5, TypeError)], models=lenet)  # fmt: skip
SNIP_ROWS = [("inputs", [1.0], TypeError), ("inputs", torch.zeros(2, 3, 28, 28), ValueError), ("inputs", torch.full((2, 1, 28, 28), NAN), ValueError), ("targets", None, TypeError), ("targets", torch.zeros(3).long(), ValueError), ("loss_fn", "ce", TypeError)]  # fmt: skip
CASES += sweep(at_init.snip_scores, dict(inputs=batch()[0], targets=batch()[1]), NOT_MODEL + SNIP_ROWS, models=lenet)  # fmt: skip
CASES += sweep(at_init.snip_scores, dict(inputs=batch()[0], targets=batch()[1]), [("inputs", batch()[0], ValueError, "weight of 'conv1'")], models=nan_weight())  # fmt: skip
CASES += sweep(at_init.grasp_scores, dict(inputs=batch()[0], targets=batch()[1]), NOT_MODEL + SNIP_ROWS + [("temperature", 0, ValueError), ("temperature", INF, ValueError), ("temperature", "1", TypeError)], models=lenet)  # fmt: skip
CASES += sweep(at_init.synflow_scores, dict(example_input=X28), NOT_MODEL + NOT_INPUT + [("example_input", torch.zeros(28), ValueError)], models=lenet)  # fmt: skip
CASES += sweep(at_init.prune_snip, dict(amount=0.5, inputs=batch()[0], targets=batch()[1]), NOT_MODEL + fractions("amount") + SNIP_ROWS + [("exclude", ["fc9"], ValueError)], models=lenet)  # fmt: skip
CASES += sweep(at_init.prune_grasp, dict(amount=0.5, inputs=batch()[0], targets=batch()[1]), fractions("amount") + [("temperature", -1, ValueError), ("inputs", torch.zeros(2, 3, 28, 28), ValueError)], models=lenet)  # fmt: skip
CASES += sweep(at_init.prune_synflow, dict(amount=0.5, example_input=X28, iterations=2), NOT_MODEL + fractions("amount") + NOT_INPUT + [("iterations", 0, ValueError), ("iterations", 2.0, TypeError), ("exclude", ["fc9"], ValueError)], models=lenet)  # fmt: skip

# -- pruning: structured ------------------------------------------------------------------------
NOT_GRAPH = [("graph", "graph", TypeError), ("graph", None, TypeError)]
ANOTHER = [("graph", None, ValueError, "graph does not describe this model")]
CASES += sweep(dependency.build_dependency_graph, dict(example_input=X28), NOT_MODEL + NOT_INPUT, models=lenet)  # fmt: skip
CASES += sweep(
    dependency.check_graph, {}, NOT_MODEL + NOT_GRAPH, models=graph_of(lenet)
)
CASES += sweep(dependency.require_graph, {}, NOT_GRAPH)
CASES += sweep(dependency.check_graph, {}, [("model", models.build("lenet5"), ValueError, "graph")], models=graph_of(lenet))  # fmt: skip


def group_of(graph, layer):
    return graph.group_of(layer)


CASES += sweep(group_of, dict(layer="conv1"), [("layer", "conv9", ValueError), ("layer", 3, ValueError)], models=lambda: {"graph": graph_of(lenet)()["graph"]})  # fmt: skip
CASES += sweep(
    criteria.channel_scores,
    dict(criterion="l1"),
    NOT_MODEL + NOT_GRAPH
    + [("criterion", "l3", ValueError), ("criterion", None, ValueError), ("seed", "0", TypeError),
       ("batch", batch(), ValueError), ("loss_fn", "ce", ValueError)],
    models=graph_of(lenet),
)  # fmt: skip
CASES += sweep(criteria.channel_scores, dict(criterion="l1"), [("criterion", "l1", ValueError, "graph does not describe")], models=with_graph_of_another(lenet))  # fmt: skip
CASES += sweep(criteria.channel_scores, dict(criterion="l1"), [("criterion", "fpgm", ValueError, "weight of 'conv1'")], models=graph_of(nan_weight()))  # fmt: skip
CASES += sweep(criteria.channel_scores, dict(criterion="taylor", batch=batch()), [("batch", None, ValueError), ("batch", 3, TypeError), ("batch", [(1, 2, 3)], TypeError), ("batch", [batch(channels=3)], ValueError, "inputs"), ("loss_fn", "ce", TypeError)], models=graph_of(lenet))  # fmt: skip
CASES += sweep(criteria.channel_scores, dict(criterion="bn_scale"), [("criterion", "bn_scale", ValueError, "BatchNorm")], models=graph_of(lenet))  # fmt: skip
SELECT = [("scores", "s", TypeError), ("scores", {99: torch.ones(6)}, ValueError), ("scores", {1: torch.ones(6)}, ValueError), ("amount", {"conv9": 0.5}, ValueError), ("amount", {"conv1": 0.5}, ValueError, "scope"), ("scope", "model", ValueError), ("min_channels", 0, ValueError), ("round_to", 2.0, TypeError)]  # fmt: skip
CASES += sweep(channel_selection.select_channels, dict(scores={0: torch.ones(6)}, amount=0.5, scope="global"), NOT_GRAPH + fractions("amount") + SELECT + [("scores", {0: torch.full((6,), NAN)}, ValueError)], models=lambda: {"graph": graph_of(lenet)()["graph"]})  # fmt: skip
CASES += sweep(surgery.remove_channels, dict(keep={}), NOT_MODEL + NOT_GRAPH + [("keep", [], TypeError), ("keep", {0: torch.ones(6)}, TypeError), ("keep", {0: torch.zeros(6, dtype=torch.bool)}, ValueError), ("keep", {0: torch.ones(3, dtype=torch.bool)}, ValueError), ("keep", {99: None}, ValueError), ("compensate", "yes", TypeError)], models=graph_of(lenet))  # fmt: skip
CASES += sweep(surgery.remove_channels, dict(keep={}), [("keep", {}, ValueError, "graph does not describe")], models=with_graph_of_another(lenet))  # fmt: skip
CASES += sweep(surgery.group_starts, {}, NOT_GRAPH)
PRUNE = [("criterion", "l3", ValueError), ("scope", "model", ValueError), ("min_channels", 0, ValueError), ("round_to", 2.0, TypeError), ("compensate", 1, TypeError), ("seed", None, TypeError), ("batch", batch(), ValueError), ("amount", {"fc3": 0.5}, ValueError)]  # fmt: skip
CASES += sweep(structured.prune_channels, dict(amount=0.5, criterion="l1", example_input=X28), NOT_MODEL + NOT_INPUT + fractions("amount") + PRUNE, models=resnet)  # fmt: skip
CASES += sweep(structured.prune_channels, dict(amount=0.5, criterion="l1", example_input=X28), [("criterion", "l2", ValueError, "weight of 'conv1'")], models=nan_weight(resnet))  # fmt: skip
CASES += sweep(structured.prune_channels_to_macs, dict(target=0.5, criterion="l1", example_input=X28), NOT_MODEL + NOT_INPUT + PRUNE[:-1] + [("target", 0, ValueError), ("target", 1, ValueError), ("target", NAN, ValueError), ("target", "half", TypeError), ("tolerance", 0, ValueError), ("target", 0.99, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(structured.search_macs, dict(prune=lambda a: SAME_SIZE, example_input=X28, target=0.5, top=0.9, tolerance=0.01, what="x"), NOT_MODEL + NOT_INPUT + [("prune", None, TypeError), ("target", 1.5, ValueError), ("top", NAN, ValueError), ("tolerance", -1, ValueError), ("what", 3, TypeError), ("target", 0.5, ValueError, "out of its reach")], models=lenet)  # fmt: skip
CASES += sweep(recalibration.recalibrate_batchnorm, dict(batches=[batch()]), NOT_MODEL + [("batches", [], ValueError), ("batches", 3, TypeError), ("batches", [batch(channels=3)], ValueError, "batch 0"), ("batches", [(torch.full((2, 1, 28, 28), NAN), 0)], ValueError, "inputs"), ("device", "gpu9", ValueError)], models=resnet)  # fmt: skip
CASES += sweep(recalibration.recalibrate_batchnorm, dict(batches=[batch()]), [("batches", [batch()], ValueError, "BatchNorm")], models=lenet)  # fmt: skip
CASES += sweep(compensation.channel_constants, {}, NOT_GRAPH + [("flat_keep", [True], TypeError), ("flat_keep", torch.ones(3, dtype=torch.bool), ValueError)], models=lambda: {"graph": graph_of(lenet)()["graph"]})  # fmt: skip
CASES += sweep(compensation.removal_folds, dict(flat_keep=None), NOT_GRAPH + [("flat_keep", None, TypeError), ("flat_keep", torch.ones(2), TypeError)], models=lambda: {"graph": graph_of(lenet)()["graph"]})  # fmt: skip
CASES += sweep(compensation.fold_offsets, dict(offsets={}), NOT_GRAPH + [("offsets", [], TypeError), ("offsets", {"nowhere": torch.ones(6)}, ValueError), ("offsets", {"conv1": torch.full((6,), NAN)}, ValueError), ("skip", 3, TypeError)], models=lambda: {"graph": graph_of(lenet)()["graph"]})  # fmt: skip
CASES += sweep(compensation.apply_folds, dict(folds={}), NOT_MODEL + [("folds", [], TypeError), ("folds", {("conv9", "bias"): torch.ones(6)}, ValueError), ("folds", {("conv1", "weight"): torch.ones(6)}, ValueError), ("folds", {("conv1", "bias"): torch.ones(5)}, ValueError)], models=lenet)  # fmt: skip
CASES += sweep(bn_sparsity.BNSparsity, {}, [("s", -1.0, ValueError), ("s", NAN, ValueError), ("s", "1e-3", TypeError), ("schedule", "cosine", ValueError), ("total_steps", 10, ValueError), ("layers", 3, TypeError)])  # fmt: skip
CASES += sweep(bn_sparsity.BNSparsity, dict(schedule="global_decay"), [("total_steps", None, ValueError), ("total_steps", 0, ValueError), ("total_steps", 1.5, TypeError)])  # fmt: skip


def sparsity_step(model, layers):
    bn_sparsity.BNSparsity(0.1, layers=layers).after_backward(model, 0)


CASES += sweep(sparsity_step, dict(layers=None), [("layers", "bn9", ValueError), ("layers", "conv1", ValueError), ("layers", [3], TypeError)], models=resnet)  # fmt: skip
SLIM = [("percent", 1.0, ValueError), ("percent", NAN, ValueError), ("percent", "half", TypeError), ("variant", "thin", ValueError), ("units", 2, ValueError), ("round_to", 8, ValueError)]  # fmt: skip
CASES += sweep(slimming.plan_slim, dict(percent=0.5, variant="normal", example_input=X8), NOT_MODEL + SLIM + [("example_input", torch.zeros(1, 3, 8, 8), ValueError)], models=darknet)  # fmt: skip
CASES += sweep(slimming.slim, dict(percent=0.5, variant="slim", example_input=X8), NOT_MODEL + SLIM[:4] + [("compensate", "yes", TypeError), ("layer_keep", 1.5, ValueError), ("layer_keep", NAN, ValueError), ("variant", "layer", ValueError, "percent must be 0")], models=darknet)  # fmt: skip
CASES += sweep(slimming.slim, dict(percent=0.0, variant="layer", example_input=X8, units=1), [("units", None, ValueError), ("units", 0, ValueError), ("units", 1.5, TypeError), ("units", 3, ValueError)], models=darknet)  # fmt: skip
CASES += sweep(slimming.slim, dict(percent=0.5, variant="slim", example_input=X8), [("variant", "normal", ValueError, "BatchNorm scale")], models=lambda: {"model": _nan_gamma(darknet()["model"])})  # fmt: skip
CASES += sweep(slimming.apply_plan, dict(plan=slim_variants.SlimPlan("normal", 0.0), example_input=X8), NOT_MODEL + [("plan", "plan", TypeError), ("plan", slim_variants.SlimPlan("normal", 0.5, keep={99: None}), ValueError, "keep"), ("compensate", 0, TypeError)], models=darknet)  # fmt: skip
CASES += sweep(slimming.percent_for_macs, dict(target=0.3, variant="slim", example_input=X8), NOT_MODEL + [("target", 0, ValueError), ("target", NAN, ValueError), ("variant", "layer", ValueError), ("tolerance", 2, ValueError), ("round_to", 8, ValueError), ("target", 0.99, ValueError)], models=darknet)  # fmt: skip
CASES += sweep(slimming.bn_scales, {}, NOT_GRAPH)
CASES += sweep(unit_removal.residual_units, {}, NOT_GRAPH)
CASES += sweep(unit_removal.remove_units, dict(names=["stages.0.unit0"]), NOT_MODEL + NOT_GRAPH + [("names", ["stages.0.down"], ValueError), ("names", 3, TypeError), ("compensate", "no", TypeError)], models=graph_of(darknet))  # fmt: skip


def _nan_gamma(model):
    with torch.no_grad():
        model.stem[1].weight[0] = NAN
    return model


# Cores take tensors and hold the formula; their entry point checks what reaches them. Records
# are built by the functions that check their input.
CORES = {
    criteria.l1_scores: "channel_scores", criteria.l2_scores: "channel_scores",
    criteria.bn_scale_scores: "channel_scores", criteria.taylor_scores: "channel_scores",
    criteria.fpgm_scores: "channel_scores", criteria.random_scores: "channel_scores",
    slim_variants.normal_plan: "plan_slim", slim_variants.shortcut_plan: "plan_slim",
    slim_variants.slim_plan: "plan_slim", slim_variants.regular_plan: "plan_slim",
    slim_variants.layer_plan: "plan_slim", slim_variants.layer_channel_plan: "plan_slim",
    dependency.graph_of_copy: "slim (on a copy it made itself)",
    dependency.DependencyGraph: "build_dependency_graph", dependency.ChannelGroup: "build_dependency_graph",
    dependency.Layer: "build_dependency_graph", unit_removal.ResidualUnit: "residual_units",
    slim_variants.BNScales: "bn_scales", slim_variants.SlimPlan: "plan_slim",
    study.StudyContext: "run_study", study.NotApplicable: "an exception",
}  # fmt: skip
PUBLIC_MODULES = [
    data, models, train, measure, study, masks, unstructured, n_m, sensitivity, schedules,
    ln_structured, lottery, at_init, criteria, dependency, surgery, structured, channel_selection,
    recalibration, compensation, bn_sparsity, slimming, slim_variants, unit_removal,
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input_is_a_clear_error_that_changes_nothing(case):
    check(case)


def test_every_public_function_has_rows():
    covered = {case.function for case in CASES} | set(CORES)
    covered |= {
        schedules.GradualPruning,
        bn_sparsity.BNSparsity,
    }  # and their steps above
    missing = []
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if (
                inspect.isfunction(value) or inspect.isclass(value)
            ) and value not in covered:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without bad-input rows: {missing}"
    assert len(CASES) >= 400
