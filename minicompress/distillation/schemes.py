"""Distillation schemes: who teaches whom, built on the one Hinton KD term (`kd_loss`).

    mutual_learning     Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018,
                        arXiv:1706.00384. K students, no teacher; peer k minimises
                        CE(z_k, y) + 1/(K−1) Σ_{l≠k} KL(p_l ‖ p_k), the peers' p_l held fixed.
    born_again          Furlanello, Lipton, Tschannen, Itti, Anandkumar, "Born Again Neural
                        Networks", ICML 2018, arXiv:1805.04770. Generation g+1, the same
                        architecture freshly initialised, is distilled from generation g.
    teacher_assistant   Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh, "Improved
                        Knowledge Distillation via Teacher Assistant", AAAI 2020,
                        arXiv:1902.03393. Teacher -> assistant(s) of middle size -> student.
    NoisyTeacher        Sau, Balasubramanian, "Deep Model Compression: Distilling Knowledge
                        from Noisy Teachers", arXiv:1610.09650 (2016). z_t <- z_t ⊙ (1 + σ ξ),
                        ξ ~ N(0, 1), on a random fraction of the batches.
    Ensemble            Hinton, Vinyals, Dean, arXiv:1503.02531, §1 and the speech ensemble of
                        §4; Liu, He, Chen, Gao, "Improving Multi-Task Deep Neural Networks via
                        Knowledge Distillation for Natural Language Understanding",
                        arXiv:1904.09482 (MT-DNN): soft targets averaged over M teachers,
                        q^τ = (1/M) Σ_m softmax(z_m / τ).

The cores are `mutual_losses`, `ensemble_probabilities` and `perturb_logits`; the rest arranges
`Distiller` and `train.fit` calls. Every scheme trains the caller's models in place.

Where sources disagree: KD-Lib's DML compares raw logits with MSE (KD_Lib #102) and TAKD
compares two log-softmaxes with MSE; we use the papers' KL at τ = 1 (DML) and Hinton KD (TAKD).
DML's Algorithm 1 updates the peers in turn, recomputing predictions after each update; we
update all peers on the same batch at once (one forward pass each), so a peer's targets are
one optimizer step older than in the paper.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import train
from .._checks import check_callable, check_int, check_module, check_real, check_tensor
from .distiller import Distiller, Term, _TermLog
from .logit import kd_loss

__all__ = [
    "mutual_losses",
    "mutual_learning",
    "born_again",
    "teacher_assistant",
    "perturb_logits",
    "NoisyTeacher",
    "ensemble_probabilities",
    "Ensemble",
]


def mutual_losses(logits, targets):
    """Deep Mutual Learning: each peer's loss, CE + the mean KL from every other peer.

    Zhang et al., CVPR 2018, arXiv:1706.00384, eq. 10 (K peers, τ = 1):

        L_k = CE(z_k, y) + 1/(K−1) Σ_{l≠k} KL(p_l ‖ p_k),     p = softmax(z)

    with the other peers' p_l detached: L_k trains peer k only, so summing the K losses and
    stepping once gives every peer its own gradient.

    Args:
        logits: a list of K >= 2 tensors (B, C), one per peer.
        targets: (B,) integer labels.

    Returns:
        A tensor (K,) of the peers' losses.

    Example:
        >>> import torch
        >>> z = torch.zeros(1, 2)
        >>> mutual_losses([z, z], torch.tensor([0]))  # CE = ln 2, identical peers: KL = 0
        tensor([0.6931, 0.6931])
    """
    K = len(logits)
    losses = []
    for k in range(K):
        # kd_loss detaches its second argument: peer l is a fixed target for peer k.
        kl = sum(
            kd_loss(logits[k], logits[l], temperature=1.0) for l in range(K) if l != k
        )
        losses.append(F.cross_entropy(logits[k], targets) + kl / (K - 1))
    return torch.stack(losses)


def mutual_learning(
    students,
    train_loader,
    epochs,
    lr=None,
    device=None,
    progress=True,
    schedule="constant",
):
    """Train K >= 2 students together, each taught by the others (Deep Mutual Learning).

    Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018, arXiv:1706.00384: no
    pre-trained teacher; each peer minimises `mutual_losses`. One Adam optimizer over all the
    peers (Adam's steps are per parameter, so this equals one optimizer per peer).

    Args:
        students: a list of K >= 2 distinct `nn.Module`s with the same classes; trained in
            place.
        train_loader, epochs, lr, device, progress, schedule: as in `train.fit`; the bar
            shows the accuracy of the peers' averaged logits.

    Returns:
        `train.fit`'s history ("loss" is the sum of the peers' losses) plus "loss_k", the
        loss of peer k per epoch.

    Raises:
        TypeError: a student that is not an `nn.Module`.
        ValueError: fewer than two students, or one module given twice.
    """
    students = list(students)
    for student in students:
        check_module(student, "each student")
    if len(students) < 2 or len({id(s) for s in students}) < len(students):
        raise ValueError(
            f"mutual learning needs at least two distinct students, got {len(students)} "
            f"({len({id(s) for s in students})} distinct)"
        )
    cohort = _Cohort(students)
    log = _TermLog([f"loss_{k}" for k in range(len(students))])

    def loss_fn(outputs, targets):
        losses = mutual_losses(cohort.logits, targets)
        log.add({f"loss_{k}": loss for k, loss in enumerate(losses)}, len(targets))
        return losses.sum()

    try:
        history = train.fit(
            cohort,
            train_loader,
            epochs,
            lr=lr,
            loss_fn=loss_fn,
            device=device,
            progress=progress,
            callbacks=[log],
            schedule=schedule,
        )
    finally:
        cohort.logits = None  # no graph kept alive on the caller's behalf
    history.update(log.history)
    return history


def born_again(
    build,
    teacher,
    train_loader,
    generations,
    epochs,
    w_ce=1.0,
    w_kd=1.0,
    temperature=1.0,
    lr=None,
    seed=0,
    device=None,
    progress=True,
    schedule="constant",
):
    """Born-again generations: each a fresh copy of the architecture, distilled from the last.

    Furlanello, Lipton, Tschannen, Itti, Anandkumar, "Born Again Neural Networks", ICML 2018,
    arXiv:1805.04770. With f the architecture and θ_0 the trained teacher,

        θ_{g+1} = argmin_θ  w_ce · CE(f(x; θ), y) + w_kd · τ² KL(p^τ(x; θ_g) ‖ p^τ(x; θ))

    "dual goals of predicting the correct labels and matching the output distribution of the
    teacher" (paper, §1). Their ensemble of generations (BANE) is `Ensemble(generations)`.

    Args:
        build: a callable with no arguments returning a fresh, untrained student (the
            teacher's architecture for a born-again sequence; any for self-distillation).
        teacher: the trained generation 0, an `nn.Module`.
        train_loader, epochs, lr, device, progress, schedule: as in `train.fit`, per
            generation.
        generations: how many new generations to train, an int >= 1.
        w_ce, w_kd: weights >= 0 of the cross-entropy and the KD term, default 1 and 1.
        temperature: τ > 0 of the KD term, default 1 (the teacher's distribution as it is).
        seed: generation g is built with the global RNG seeded with seed + g inside
            `torch.random.fork_rng`, so the caller's random state is left alone.

    Returns:
        (models, histories): the G trained generations and their `Distiller` histories.
    """
    check_callable(build, "build")
    check_module(teacher, "teacher")
    generations = check_int(generations, "generations", low=1)
    seed = check_int(seed, "seed")
    term = Term(kd_loss, w_kd, options={"temperature": temperature})
    w_ce = check_real(w_ce, "w_ce", low=0)
    models, histories = [], []
    for g in range(1, generations + 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + g)
            student = check_module(build(), "build()")
        history = Distiller(teacher, student, term, w_ce=w_ce).fit(
            train_loader,
            epochs,
            lr=lr,
            device=device,
            progress=progress,
            schedule=schedule,
        )
        models.append(student.eval())
        histories.append(history)
        teacher = student
    return models, histories


def teacher_assistant(
    teacher,
    assistants,
    student,
    train_loader,
    epochs,
    w_ce=0.1,
    w_kd=0.9,
    temperature=4.0,
    lr=None,
    device=None,
    progress=True,
    schedule="constant",
):
    """Teacher-assistant KD: distil the teacher into an assistant, the assistant into the student.

    Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh, "Improved Knowledge
    Distillation via Teacher Assistant", AAAI 2020, arXiv:1902.03393: when the gap between
    teacher and student is large, a network of middle size bridges it. Each step is Hinton KD,

        L = w_ce · CE(z_s, y) + w_kd · τ² KL(p_t^τ ‖ p_s^τ),

    along the chain teacher -> assistants[0] -> ... -> student.

    Args:
        teacher: the trained teacher, an `nn.Module`.
        assistants: an untrained `nn.Module` or a list of them, largest first; each trained
            in place.
        student: the untrained student, trained in place.
        train_loader, epochs, lr, device, progress, schedule: as in `train.fit`, per step.
        w_ce, w_kd, temperature: the KD objective of every step, defaults 0.1, 0.9 and 4
            (RepDistiller's KD settings; the paper tuned τ and λ per pair).

    Returns:
        A list of `Distiller` histories, one per step.
    """
    assistants = [assistants] if isinstance(assistants, nn.Module) else list(assistants)
    chain = [check_module(teacher, "teacher")]
    chain += [check_module(a, "each assistant") for a in assistants]
    chain.append(check_module(student, "student"))
    term = Term(kd_loss, w_kd, options={"temperature": temperature})
    w_ce = check_real(w_ce, "w_ce", low=0)
    histories = []
    for bigger, smaller in zip(chain[:-1], chain[1:]):
        histories.append(
            Distiller(bigger.eval(), smaller, term, w_ce=w_ce).fit(
                train_loader,
                epochs,
                lr=lr,
                device=device,
                progress=progress,
                schedule=schedule,
            )
        )
    return histories


def perturb_logits(logits, std, generator):
    """Noisy teacher: z ⊙ (1 + σ ξ), ξ ~ N(0, 1) drawn per logit from `generator`.

    Sau & Balasubramanian, arXiv:1610.09650, §3: multiplicative Gaussian noise on the
    teacher's logits, a regulariser that acts like several teachers.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, -1.0]])
        >>> torch.equal(perturb_logits(z, 0.0, torch.Generator()), z)
        True
    """
    xi = torch.randn(logits.shape, generator=generator, device=generator.device)
    return logits * (1 + std * xi.to(logits.device))


class NoisyTeacher(nn.Module):
    """A teacher whose logits get multiplicative noise on a random fraction of the calls.

    Sau, Balasubramanian, "Deep Model Compression: Distilling Knowledge from Noisy
    Teachers", arXiv:1610.09650 (2016). With probability `probability` per forward pass,

        z_t <- z_t ⊙ (1 + σ ξ),   ξ ~ N(0, 1) per logit;

    otherwise the logits pass unchanged. Use it as the `Distiller`'s teacher; evaluate the
    wrapped teacher itself.

    Args:
        teacher: the trained teacher, an `nn.Module`.
        std: σ >= 0, default sqrt(0.1) (KD-Lib's NoisyTeacher: noise variance 0.1).
        probability: chance in [0, 1] that a batch is perturbed, default 0.5 (KD-Lib's α).
        seed: seed of the generator that draws both the coin and the noise.

    Example:
        >>> import torch
        >>> noisy = NoisyTeacher(torch.nn.Linear(3, 2), std=0.3, probability=1.0)
        >>> x = torch.randn(4, 3)
        >>> bool((noisy(x) != noisy.teacher(x)).all())
        True
    """

    def __init__(self, teacher, std=0.1**0.5, probability=0.5, seed=0):
        super().__init__()
        self.teacher = check_module(teacher, "teacher")
        self.std = check_real(std, "std", low=0)
        self.probability = check_real(probability, "probability", low=0, high=1)
        self.generator = torch.Generator().manual_seed(check_int(seed, "seed"))
        self.training = teacher.training  # wrapping changes no mode

    def forward(self, x):
        logits = self.teacher(x)
        if torch.rand((), generator=self.generator).item() < self.probability:
            logits = perturb_logits(logits, self.std, self.generator)
        return logits

    def extra_repr(self):
        return f"std={self.std:g}, probability={self.probability:g}"


def ensemble_probabilities(logits, temperature=1.0):
    """Averaged soft targets of M teachers: q^τ = (1/M) Σ_m softmax(z_m / τ).

    Hinton, Vinyals, Dean, arXiv:1503.02531 (the arithmetic mean of the ensemble's
    distributions); MT-DNN (arXiv:1904.09482) averages class probabilities the same way.

    Args:
        logits: a list of M >= 1 tensors (B, C).
        temperature: τ > 0.

    Returns:
        (B, C) probabilities, rows summing to one.

    Example:
        >>> import torch
        >>> ensemble_probabilities([torch.tensor([[9.0, -9.0]]), torch.tensor([[-9.0, 9.0]])])
        tensor([[0.5000, 0.5000]])
    """
    return torch.stack([F.softmax(z / temperature, dim=1) for z in logits]).mean(dim=0)


class Ensemble(nn.Module):
    """M teachers as one: logits whose τ-softmax is the teachers' averaged soft targets.

    forward returns τ · log q^τ with q^τ = `ensemble_probabilities`(teachers' logits, τ), so
    softmax(forward(x) / τ) = q^τ exactly and `kd_loss` at the same τ distils the averaged
    targets. At τ = 1 it is also the ensemble's prediction (argmax of the mean probability):
    Born-Again's BANE, Hinton et al.'s speech ensemble.

    Args:
        teachers: a list of M >= 1 `nn.Module`s with the same classes.
        temperature: τ > 0 at which the probabilities are averaged, default 1; use the
            distillation's τ.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
        >>> x = torch.randn(2, 3)
        >>> q = ensemble_probabilities([a(x), b(x)], temperature=4.0)
        >>> torch.allclose(torch.softmax(Ensemble([a, b], 4.0)(x) / 4.0, dim=1), q)
        True
    """

    def __init__(self, teachers, temperature=1.0):
        super().__init__()
        teachers = list(teachers)
        if not teachers:
            raise ValueError("an ensemble needs at least one teacher")
        self.teachers = nn.ModuleList(
            [check_module(t, "each teacher") for t in teachers]
        )
        self.temperature = check_real(temperature, "temperature", low=0, low_open=True)
        self.training = any(t.training for t in teachers)  # wrapping changes no mode

    def forward(self, x):
        logits = [teacher(x) for teacher in self.teachers]
        for z in logits:
            check_tensor(z, "each teacher's logits", dims=2)
        # τ · log q^τ as a log-sum-exp of log-probabilities: finite where q^τ underflows.
        log_p = torch.stack(
            [F.log_softmax(z / self.temperature, dim=1) for z in logits]
        )
        log_q = torch.logsumexp(log_p, dim=0) - math.log(len(logits))
        return self.temperature * log_q

    def extra_repr(self):
        return f"temperature={self.temperature:g}"


# ---------------------------------------------------------------------------------------------


class _Cohort(nn.Module):
    """The peers as one module for `train.fit`: forward keeps each peer's logits for the loss
    and returns their mean, whose accuracy fit reports."""

    def __init__(self, peers):
        super().__init__()
        self.peers = nn.ModuleList(peers)
        self.logits = None

    def forward(self, x):
        self.logits = [peer(x) for peer in self.peers]
        return torch.stack(self.logits).mean(dim=0)
