"""Distiller: the objective it minimises against a hand-written one, what it trains and what
it leaves alone, and every documented error with the models unchanged afterwards."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.data import TensorDataset

from minicompress import models
from minicompress.distillation import (
    ContrastMemory,
    CRDEmbed,
    Distiller,
    IndexedDataset,
    Paraphraser,
    Term,
    Translator,
    VIDRegressor,
    at_loss,
    crd_loss,
    fitnet_loss,
    ft_loss,
    kd_loss,
    rkd_distance_loss,
    vid_loss,
)


def _batches(n=2, batch=8, classes=3, features=4, index=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(batch, features, generator=g)
        y = torch.randint(0, classes, (batch,), generator=g)
        out.append(
            (x, y, torch.arange(i * batch, (i + 1) * batch)) if index else (x, y)
        )
    return out


def _mlp(features=4, hidden=5, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )


def _unchanged(model, snapshot):
    state, modes = snapshot
    same_state = all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    no_hooks = all(
        not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()
    )
    return same_state and [m.training for m in model.modules()] == modes and no_hooks


def _sgd_step_by_hand(teacher, student, batch, w_ce, w_kd, temperature, lr):
    # The objective as Hinton et al. write it, differentiated by autograd, one SGD step.
    x, y = batch
    expected = copy.deepcopy(student)
    logits = expected(x)
    with torch.no_grad():
        p_t = F.softmax(teacher(x) / temperature, dim=1)
    log_p_s = F.log_softmax(logits / temperature, dim=1)
    kd = temperature**2 * F.kl_div(log_p_s, p_t, reduction="batchmean")
    ce = F.cross_entropy(logits, y)
    loss = w_ce * ce + w_kd * kd
    loss.backward()
    with torch.no_grad():
        for p in expected.parameters():
            p -= lr * p.grad
    return expected, loss.item(), ce.item(), kd.item()


def test_one_step_minimises_w_ce_ce_plus_w_kd_tau2_kl():
    teacher, student = _mlp(seed=1).eval(), _mlp(seed=2)
    (batch,) = _batches(n=1)
    expected, loss, ce, kd = _sgd_step_by_hand(
        teacher, student, batch, 0.3, 0.7, 2.0, 0.1
    )
    distiller = Distiller(
        teacher, student, Term(kd_loss, 0.7, options={"temperature": 2.0}), w_ce=0.3
    )
    history = distiller.fit(
        [batch],
        1,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
        progress=False,
    )
    assert_close(history["loss"][0], loss, rtol=1e-6, atol=0)
    assert_close(history["ce"][0], ce, rtol=1e-6, atol=0)
    assert_close(history["kd"][0], kd, rtol=1e-6, atol=0)
    for ours, theirs in zip(student.parameters(), expected.parameters()):
        assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_the_teacher_is_frozen_and_the_history_has_one_value_per_term_and_epoch():
    teacher, student = _mlp(seed=1).eval(), _mlp(seed=2)
    before = _snapshot(teacher)
    terms = [Term(kd_loss, 0.9), Term(F.mse_loss, 0.5, name="logit_mse")]
    history = Distiller(teacher, student, terms, w_ce=0.1).fit(
        _batches(), 3, lr=0.01, progress=False
    )
    assert _unchanged(teacher, before) and all(
        p.grad is None for p in teacher.parameters()
    )
    assert sorted(history) == ["accuracy", "ce", "kd", "logit_mse", "loss"]
    assert all(len(v) == 3 for v in history.values())
    # the total is the weighted sum of the logged terms (each an average over the epoch)
    for i in range(3):
        total = (
            0.1 * history["ce"][i]
            + 0.9 * history["kd"][i]
            + 0.5 * history["logit_mse"][i]
        )
        assert_close(history["loss"][i], total, rtol=1e-5, atol=0)


def test_a_teacher_in_training_mode_is_switched_to_eval_with_a_warning():
    teacher = nn.Sequential(
        nn.Linear(4, 3), nn.Dropout(0.5)
    )  # dropout would make noise
    student = _mlp()
    with pytest.warns(UserWarning, match="switched it to eval mode.*teacher.eval"):
        Distiller(teacher, student, Term(kd_loss, 1.0)).fit(
            _batches(), 1, progress=False
        )
    assert not teacher.training and student.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning once it is in eval mode
        Distiller(teacher, student, Term(kd_loss, 1.0)).fit(
            _batches(), 1, progress=False
        )


def test_pairs_sum_the_loss_over_each_student_teacher_pair():
    teacher, student = _mlp(seed=1).eval(), _mlp(seed=2)
    pairs = [("0", "0"), ("1", "1")]  # pre- and post-ReLU hidden layers, both 5 wide
    term = Term(F.mse_loss, 1.0, pairs=pairs, name="hidden")
    (batch,) = _batches(n=1)
    x = batch[0]
    with torch.no_grad():
        h_s, h_t = student[0](x), teacher[0](x)
        expected = F.mse_loss(h_s, h_t) + F.mse_loss(h_s.relu(), h_t.relu())
    history = Distiller(teacher, student, term, w_ce=0.0).fit(
        [batch], 1, lr=1e-3, progress=False
    )
    assert_close(history["hidden"][0], expected.item(), rtol=1e-6, atol=0)


def test_an_adapter_is_built_from_the_first_batch_and_trained_with_the_student():
    teacher = _mlp(hidden=7, seed=1).eval()
    student = _mlp(hidden=5, seed=2)
    term = Term(F.mse_loss, 1.0, student="0", teacher="0", adapter=True, name="hint")
    distiller = Distiller(teacher, student, term)
    distiller.fit(_batches(), 1, lr=0.01, progress=False)
    (adapter,) = distiller.adapters["hint"]["student"]
    assert isinstance(adapter, nn.Linear) and adapter.weight.shape == (7, 5)
    first = adapter.weight.detach().clone()
    distiller.fit(
        _batches(), 1, lr=0.01, progress=False
    )  # the same adapter keeps training
    assert distiller.adapters["hint"]["student"][0] is adapter and not torch.equal(
        first, adapter.weight
    )
    assert {id(p) for p in adapter.parameters()} <= {
        id(p) for p in distiller.parameters()
    }
    assert not any(
        isinstance(m, nn.Linear) and m.weight.shape == (7, 5) for m in student.modules()
    )


def test_learned_parts_join_a_given_optimizer_as_a_new_group():
    class ScaledMSE(nn.Module):  # a loss with a learned parameter, like a CRD embedding
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, student_logits, teacher_logits):
            return F.mse_loss(self.scale * student_logits, teacher_logits)

    teacher, student, loss = _mlp(seed=1).eval(), _mlp(seed=2), ScaledMSE()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    Distiller(teacher, student, Term(loss, 1.0)).fit(
        _batches(), 1, optimizer=optimizer, progress=False
    )
    assert len(optimizer.param_groups) == 2 and optimizer.param_groups[1]["params"] == [
        loss.scale
    ]
    assert loss.scale.item() != 2.0


def test_labels_and_sample_indices_reach_the_losses_that_name_them():
    seen = {}

    def with_targets(student_logits, targets, smoothing=0.0):
        seen["targets"] = targets
        return F.cross_entropy(student_logits, targets, label_smoothing=smoothing)

    def with_index(student_logits, teacher_logits, index):
        seen["index"] = index
        return (student_logits - teacher_logits).pow(2).mean()

    terms = [
        Term(with_targets, 1.0, teacher=(), options={"smoothing": 0.1}),
        Term(with_index, 1.0),
    ]
    batches = _batches(n=1, index=True)
    Distiller(_mlp(seed=1).eval(), _mlp(seed=2), terms, w_ce=0.0).fit(
        batches, 1, progress=False
    )
    assert torch.equal(seen["targets"], batches[0][1]) and torch.equal(
        seen["index"], batches[0][2]
    )


def test_torchvision_models_distil_in_five_lines_with_taps_by_module_path():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(num_classes=10).eval()
    student = torchvision.models.mobilenet_v3_small(num_classes=10)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]
    before = _snapshot(teacher)
    # --- the five lines a user writes (32x32 inputs: features.3 and layer2 are 4x4 maps) ---
    terms = [
        Term(kd_loss, 0.9, options={"temperature": 4.0}),
        Term(
            at_loss, 1000.0, pairs=[("features.3", "layer2"), ("features.8", "layer3")]
        ),
        Term(fitnet_loss, 1.0, student="features.12", teacher="layer4", adapter=True),
        Term(rkd_distance_loss, 25.0, student="classifier:input", teacher="fc:input"),
    ]
    distiller = Distiller(teacher, student, terms, w_ce=0.1)
    history = distiller.fit(loader, epochs=1, lr=1e-3, progress=False)
    # -----------------------------------------------------------------------------------------
    assert all(
        len(history[k]) == 1 and history[k][0] > 0
        for k in ("ce", "kd", "at", "fitnet", "rkd_distance")
    )
    (hint,) = distiller.adapters["fitnet"]["student"]
    assert isinstance(hint, nn.Conv2d) and (hint.in_channels, hint.out_channels) == (
        576,
        512,
    )
    assert _unchanged(teacher, before)
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks for m in student.modules()
    )


def test_crd_trains_both_embedding_heads_and_updates_its_memory_bank():
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    loader = torch.utils.data.DataLoader(
        IndexedDataset(TensorDataset(x, y)), batch_size=8
    )
    teacher, student = _mlp(hidden=7, seed=1).eval(), _mlp(hidden=5, seed=2)
    heads = CRDEmbed(5, dim=8), CRDEmbed(7, dim=8)
    memory = ContrastMemory(dim=8, dataset_size=24, negatives=4, labels=y)
    start = (
        [p.detach().clone() for h in heads for p in h.parameters()],
        memory.student.clone(),
    )
    term = Term(
        crd_loss,
        0.8,
        student="2:input",
        teacher="2:input",
        adapter=heads[0],
        teacher_adapter=heads[1],
        options={"memory": memory},
    )
    history = Distiller(teacher, student, term).fit(loader, 2, lr=0.01, progress=False)
    assert len(history["crd"]) == 2 and history["crd"][0] > 0
    after = [p for h in heads for p in h.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(after, start[0]))
    assert not torch.equal(memory.student, start[1])


def test_an_adapter_that_returns_a_tuple_gives_the_loss_several_tensors():
    def conv_net(channels, seed):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 3),
        )

    teacher, student = conv_net(6, 1).eval(), conv_net(4, 2)
    regressor = VIDRegressor(4, 6)  # returns (mean, variance) for vid_loss
    alpha = regressor.alpha.detach().clone()
    term = Term(vid_loss, 1.0, student="1", teacher="1", adapter=regressor)
    batches = [(torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0]))]
    history = Distiller(teacher, student, term).fit(batches, 1, lr=0.01, progress=False)
    assert len(history["vid"]) == 1 and not torch.equal(regressor.alpha, alpha)


def test_the_terms_read_as_a_formula():
    terms = [
        Term(kd_loss, 0.9, options={"temperature": 4.0}),
        Term(F.mse_loss, 2.0, pairs=[("0", "0")], name="hint"),
    ]
    text = repr(Distiller(_mlp(), _mlp(), terms, w_ce=0.1))
    assert text == (
        "Distiller(Sequential -> Sequential: 0.1·ce + 0.9·kd(logits | logits), "
        "temperature=4.0 + 2·hint(0 | 0))"
    )


# --- bad input: clear errors, models unchanged ------------------------------------------------


def _assert_fit_fails_cleanly(
    teacher, student, terms, match, batches=None, error=ValueError
):
    snapshots = _snapshot(teacher), _snapshot(student)
    with pytest.raises(error, match=match):
        Distiller(teacher, student, terms).fit(batches or _batches(), 1, progress=False)
    assert _unchanged(teacher, snapshots[0]) and _unchanged(student, snapshots[1])


def test_a_student_with_a_frozen_batchnorm_keeps_it_frozen_after_an_error():
    student = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    student[1].eval()  # the caller froze this layer's statistics
    _assert_fit_fails_cleanly(
        _mlp(classes=5).eval(), student, Term(kd_loss, 1.0), "num_classes=5"
    )
    assert student.training and not student[1].training


def test_teacher_and_student_of_different_class_counts_is_an_error():
    teacher = _mlp(classes=5).eval()
    _assert_fit_fails_cleanly(
        teacher,
        _mlp(classes=3),
        Term(kd_loss, 1.0),
        r"teacher \(8, 5\), student \(8, 3\).*num_classes=5",
    )


def test_a_temperature_at_or_below_zero_is_an_error():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            Term(kd_loss, 1.0, options={"temperature": bad})


def test_a_negative_weight_is_an_error():
    with pytest.raises(
        ValueError, match="weight of term 'kd' must be a finite number >= 0, got -0.5"
    ):
        Term(kd_loss, -0.5)
    with pytest.raises(ValueError, match="w_ce must be a finite number >= 0"):
        Distiller(_mlp(), _mlp(), Term(kd_loss, 1.0), w_ce=-1)


def test_a_layer_that_does_not_exist_is_an_error_naming_the_closest():
    teacher, student = models.build("resnet8").eval(), models.build("resnet8")
    snapshot = _snapshot(student)
    with pytest.raises(ValueError, match=r"'layer4'.*closest: 'layer3'"):
        Distiller(
            teacher, student, Term(F.mse_loss, 1.0, student="layer4", teacher="layer3")
        )
    assert _unchanged(student, snapshot)


def test_an_incompatible_shape_is_an_error_naming_the_term_and_the_shapes():
    teacher, student = models.build("resnet8").eval(), models.build("resnet8")
    x = [(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))]
    # layer1 gives (2, 16, 28, 28) and layer3 (2, 64, 7, 7): no 1x1 adapter can map one to the other
    term = Term(F.mse_loss, 1.0, student="layer1", teacher="layer3", adapter=True)
    _assert_fit_fails_cleanly(teacher, student, term, "not spatial size", batches=x)
    # without an adapter the loss itself fails: the message names the term and both shapes
    term = Term(fitnet_loss, 1.0, student="layer2", teacher="layer3", name="hint")
    _assert_fit_fails_cleanly(
        teacher,
        student,
        term,
        r"term 'hint' failed.*layer2 \(2, 32, 14, 14\).*layer3 \(2, 64, 7, 7\)",
        batches=x,
    )


def test_a_misspelt_option_is_an_error_listing_the_options():
    with pytest.raises(ValueError, match="options are: temperature"):
        Term(kd_loss, 1.0, options={"temprature": 4.0})


def test_a_module_that_runs_twice_cannot_be_tapped():
    teacher, student = models.build("lenet5").eval(), models.build("lenet5")
    x = [(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))]
    _assert_fit_fails_cleanly(
        teacher,
        student,
        Term(F.mse_loss, 1.0, student="relu", teacher="relu"),
        "ran 4 times",
        batches=x,
    )


def test_a_term_that_takes_indices_needs_a_loader_that_yields_them():
    def needs_index(student_logits, teacher_logits, index):
        return student_logits.sum() * 0

    _assert_fit_fails_cleanly(
        _mlp().eval(),
        _mlp(),
        Term(needs_index, 1.0),
        "yield \\(inputs, targets, index\\)",
    )


def test_other_bad_arguments_are_errors():
    student = _mlp()
    with pytest.raises(ValueError, match="same module"):
        Distiller(student, student, Term(kd_loss, 1.0))
    with pytest.raises(TypeError, match="terms must hold Term"):
        Distiller(_mlp(), student, [kd_loss])
    with pytest.raises(ValueError, match="two terms are called 'kd'"):
        Distiller(_mlp(), student, [Term(kd_loss, 1.0), Term(kd_loss, 2.0)])
    with pytest.raises(ValueError, match="reserved"):
        Term(kd_loss, 1.0, name="ce")
    with pytest.raises(ValueError, match="either pairs or student/teacher"):
        Term(F.mse_loss, 1.0, student="0", pairs=[("0", "0")])
    with pytest.raises(ValueError, match="adapter=True needs a tapped layer"):
        Term(kd_loss, 1.0, adapter=True)
    with pytest.raises(ValueError, match="either optimizer or lr"):
        Distiller(_mlp(), student, Term(kd_loss, 1.0)).fit(
            _batches(),
            1,
            lr=0.1,
            optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
        )


def test_a_frozen_teacher_side_adapter_keeps_its_eval_mode_and_its_statistics():
    # Factor transfer's paraphraser is trained first, then frozen: its BatchNorm must keep
    # the running statistics of that stage (eval mode), while the translator trains.
    def conv_net(channels, seed):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 3),
        )

    teacher, student = conv_net(6, 1).eval(), conv_net(4, 2)
    paraphraser = Paraphraser(6).eval().requires_grad_(False)
    translator = Translator(4, 3)
    before = _snapshot(paraphraser)
    term = Term(
        ft_loss,
        1.0,
        student="1",
        teacher="1",
        adapter=translator,
        teacher_adapter=paraphraser.encoder,
    )
    batches = [(torch.randn(4, 1, 5, 5), torch.tensor([0, 1, 2, 0]))] * 2
    history = Distiller(teacher, student, term).fit(batches, 2, lr=0.01, progress=False)
    assert len(history["ft"]) == 2
    assert _unchanged(
        paraphraser, before
    )  # eval mode, same weights and running statistics
    assert translator.training
