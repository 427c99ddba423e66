"""Distillation schemes: DML's per-peer loss and ensemble targets on hand-worked cases, the
noisy teacher against its own generator, and what each scheme trains and leaves alone."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from minicompress.distillation import (
    Distiller,
    Ensemble,
    NoisyTeacher,
    Term,
    born_again,
    ensemble_probabilities,
    kd_loss,
    mutual_learning,
    mutual_losses,
    teacher_assistant,
)


def _batches(n=3, batch=16, features=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(
        features, classes, generator=g
    )  # a learnable rule, so accuracy can rise
    out = []
    for _ in range(n):
        x = torch.randn(batch, features, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


def _mlp(hidden=8, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


# --- Deep Mutual Learning -----------------------------------------------------------------------


def test_dml_loss_is_ce_plus_kl_from_the_other_peer_on_a_hand_case():
    # p_1 = softmax(ln 3, 0) = (3/4, 1/4), p_2 = (1/2, 1/2), label 0.
    z1 = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64, requires_grad=True)
    z2 = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    losses = mutual_losses([z1, z2], torch.tensor([0]))
    expected_1 = (
        -math.log(0.75) + 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    )
    expected_2 = (
        math.log(2.0) + 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    )
    assert_close(
        losses,
        torch.tensor([expected_1, expected_2], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )
    # the other peer's prediction is a constant: L_2 sends no gradient into z_1, and its
    # gradient in z_2 is (p_2 − onehot(y)) + (p_2 − p_1) = (−1/2, 1/2) + (−1/4, 1/4)
    losses[1].backward()
    assert not z1.grad.any()
    assert_close(
        z2.grad, torch.tensor([[-0.75, 0.75]], dtype=torch.float64), rtol=0, atol=1e-12
    )


def test_dml_averages_the_kl_over_the_other_peers():
    # three peers: L_1 = CE + (KL(p_2 ‖ p_1) + KL(p_3 ‖ p_1)) / 2
    z = [
        torch.tensor([[math.log(3.0), 0.0]]),
        torch.zeros(1, 2),
        torch.tensor([[0.0, math.log(3.0)]]),
    ]
    kl_21 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl_31 = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)
    expected = -math.log(0.75) + (kl_21 + kl_31) / 2
    assert_close(
        mutual_losses(z, torch.tensor([0]))[0].item(), expected, rtol=0, atol=1e-6
    )


def test_mutual_learning_equals_each_peer_stepping_on_its_own_loss():
    batches = _batches()
    a, b = _mlp(seed=1), _mlp(seed=2)
    ref_a, ref_b = copy.deepcopy(a), copy.deepcopy(b)
    history = mutual_learning([a, b], batches, epochs=1, lr=0.01, progress=False)
    # The reference: two optimizers, each peer's loss with the other's logits detached.
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (ref_a, ref_b)]
    for x, y in batches:
        z_a, z_b = ref_a(x), ref_b(x)
        losses = [
            F.cross_entropy(z_a, y)
            + F.kl_div(
                F.log_softmax(z_a, 1), F.softmax(z_b.detach(), 1), reduction="batchmean"
            ),
            F.cross_entropy(z_b, y)
            + F.kl_div(
                F.log_softmax(z_b, 1), F.softmax(z_a.detach(), 1), reduction="batchmean"
            ),
        ]
        for optimizer, loss in zip(optimizers, losses):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for ours, theirs in zip(
        [*a.parameters(), *b.parameters()], [*ref_a.parameters(), *ref_b.parameters()]
    ):
        assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert sorted(history) == ["accuracy", "loss", "loss_0", "loss_1"]
    assert_close(
        history["loss"][0],
        history["loss_0"][0] + history["loss_1"][0],
        rtol=1e-5,
        atol=0,
    )


def test_mutual_learning_needs_two_distinct_students():
    a = _mlp()
    with pytest.raises(
        ValueError, match="at least two distinct students, got 2 \\(1 distinct\\)"
    ):
        mutual_learning([a, a], _batches(), 1, progress=False)
    with pytest.raises(ValueError, match="at least two"):
        mutual_learning([a], _batches(), 1, progress=False)


# --- ensemble ---------------------------------------------------------------------------------


def test_the_ensemble_target_is_the_mean_of_the_teachers_softmax():
    # (3/4, 1/4) and (1/2, 1/2) average to (5/8, 3/8)
    q = ensemble_probabilities(
        [torch.tensor([[math.log(3.0), 0.0]]), torch.zeros(1, 2)]
    )
    assert_close(q, torch.tensor([[0.625, 0.375]]), rtol=0, atol=1e-7)


def test_the_ensembles_logits_reproduce_the_averaged_soft_targets_at_its_temperature():
    teachers = [_mlp(seed=s) for s in range(3)]
    x = torch.randn(5, 4)
    for tau in (1.0, 4.0):
        expected = sum(F.softmax(t(x) / tau, dim=1) for t in teachers) / 3
        ensemble = Ensemble(teachers, temperature=tau)
        assert_close(
            F.softmax(ensemble(x) / tau, dim=1), expected, rtol=1e-5, atol=1e-7
        )
    # extreme logits: the probabilities underflow, the ensemble's logits stay finite
    sharp = Ensemble([nn.Linear(4, 3)], temperature=0.01)
    with torch.no_grad():
        sharp.teachers[0].weight.fill_(100.0)
    assert torch.isfinite(sharp(torch.randn(2, 4))).all()


def test_distilling_an_ensemble_distils_the_averaged_targets():
    teachers = [_mlp(seed=s).eval() for s in range(2)]
    student = _mlp(seed=5)
    (batch,) = _batches(n=1)
    x = batch[0]
    with torch.no_grad():
        q = ensemble_probabilities([t(x) for t in teachers], temperature=4.0)
        log_p = F.log_softmax(student(x) / 4.0, dim=1)
        expected = 16.0 * F.kl_div(log_p, q, reduction="batchmean")
    history = Distiller(
        Ensemble(teachers, 4.0),
        student,
        Term(kd_loss, 1.0, options={"temperature": 4.0}),
    ).fit([batch], 1, progress=False)
    assert_close(history["kd"][0], expected.item(), rtol=1e-5, atol=0)


# --- noisy teacher ----------------------------------------------------------------------------


def test_the_noisy_teacher_multiplies_logits_by_one_plus_sigma_xi_from_its_generator():
    teacher = _mlp().eval()
    x = torch.randn(6, 4)
    noisy = NoisyTeacher(teacher, std=0.3, probability=1.0, seed=7)
    # the reference: the same draws from an identically seeded generator
    g = torch.Generator().manual_seed(7)
    torch.rand((), generator=g)  # the coin
    xi = torch.randn(6, 3, generator=g)
    with torch.no_grad():
        assert_close(noisy(x), teacher(x) * (1 + 0.3 * xi), rtol=1e-6, atol=1e-7)
        assert torch.equal(NoisyTeacher(teacher, probability=0.0)(x), teacher(x))


def test_the_noisy_teacher_perturbs_about_the_asked_fraction_of_batches():
    teacher = nn.Linear(4, 3)
    noisy = NoisyTeacher(teacher, std=0.5, probability=0.5, seed=0)
    x = torch.randn(2, 4)
    with torch.no_grad():
        clean = teacher(x)
        perturbed = [not torch.equal(noisy(x), clean) for _ in range(400)]
    assert 0.42 < sum(perturbed) / 400 < 0.58  # binomial(400, 0.5): std 0.025


def test_noisy_teacher_and_ensemble_check_their_arguments():
    with pytest.raises(
        ValueError, match="probability must be a finite number in \\[0, 1\\]"
    ):
        NoisyTeacher(nn.Linear(2, 2), probability=1.5)
    with pytest.raises(ValueError, match="std must be a finite number >= 0"):
        NoisyTeacher(nn.Linear(2, 2), std=-0.1)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        Ensemble([nn.Linear(2, 2)], temperature=0)
    with pytest.raises(ValueError, match="at least one teacher"):
        Ensemble([])


# --- born-again and teacher assistant ------------------------------------------------------------


def test_born_again_trains_fresh_generations_each_from_the_last():
    teacher = _mlp(seed=0).eval()
    before = copy.deepcopy(teacher.state_dict())
    state = torch.random.get_rng_state()

    def build():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    models, histories = born_again(
        build,
        teacher,
        _batches(),
        generations=2,
        epochs=2,
        lr=0.01,
        seed=3,
        progress=False,
    )
    assert torch.equal(
        torch.random.get_rng_state(), state
    )  # the caller's RNG is left alone
    assert (
        len(models) == 2
        and len(histories) == 2
        and all(len(h["kd"]) == 2 for h in histories)
    )
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not any(m is teacher for m in models) and models[0] is not models[1]
    # generation g starts from the architecture built under seed + g
    torch.manual_seed(3 + 1)
    start = build()
    assert not torch.equal(
        start[0].weight, models[0][0].weight
    )  # trained away from it ...
    assert (
        start[0].weight - models[0][0].weight
    ).abs().max() < 0.1  # ... by a few small steps


def test_teacher_assistant_distils_along_the_chain():
    teacher = _mlp(hidden=16, seed=0).eval()
    assistant, student = _mlp(hidden=8, seed=1), _mlp(hidden=4, seed=2)
    before = {
        n: copy.deepcopy(m.state_dict())
        for n, m in (("t", teacher), ("a", assistant), ("s", student))
    }
    histories = teacher_assistant(
        teacher, assistant, student, _batches(), epochs=1, lr=0.01, progress=False
    )
    assert len(histories) == 2 and all("kd" in h for h in histories)
    changed = {
        n: any(not torch.equal(v, before[n][k]) for k, v in m.state_dict().items())
        for n, m in (("t", teacher), ("a", assistant), ("s", student))
    }
    assert changed == {"t": False, "a": True, "s": True}
    assert not assistant.training  # it taught the student in eval mode
