"""Contrastive representation distillation (CRD): tell the teacher's view of a sample apart
from the teacher's views of many other samples, and the other way round.

Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020, arXiv:1910.10699
(the official code is RepDistiller). Student and teacher penultimate features are embedded
by linear heads to d = 128 dimensions and L2-normalized (v_s, v_t). A memory bank keeps, for
every training sample, a running average of each network's embedding. For a batch, each
anchor's positive is the *other* network's memory entry of the same sample, its K negatives
the other network's entries of K other samples; with scores P = exp(vᵀm / τ) / Z and the
noise probability P_n = 1 / N of N training samples, the NCE loss is

    nce(P) = −(1/B) Σ_b [ log(P_b,+ / (P_b,+ + K P_n)) + Σ_k log(K P_n / (P_b,k + K P_n)) ]
    crd    = nce(student anchors vs teacher memory) + nce(teacher anchors vs student memory)

Entry points:
    crd_loss(student_embeddings, teacher_embeddings, index, memory, temperature=0.07,
             negatives=None)
    CRDEmbed(in_features, dim=128)          linear head + L2 normalization, one per network
    ContrastMemory(dim, dataset_size, negatives=16384, momentum=0.5, labels=None, seed=0)

Shapes: embeddings (B, d); index (B,) the samples' positions in the training set (the data
loader must yield them). Both heads are trained with the student (give their parameters to
the optimizer); the teacher's features are detached before its head, so unlike every other
loss here the teacher *embeddings* carry gradients to that head.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_int,
    check_labels,
    check_real,
    check_same_shape,
    check_tensor,
)

__all__ = ["crd_loss", "CRDEmbed", "ContrastMemory"]

# Guard added to the NCE denominators, as in the official code.
NCE_EPS = 1e-7


def crd_loss(
    student_embeddings,
    teacher_embeddings,
    index,
    memory,
    temperature=0.07,
    negatives=None,
):
    """CRD: the two-sided NCE loss against a memory bank, then the bank's momentum update.

    Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020,
    arXiv:1910.10699. With m_s, m_t the memory entries, idx_b = (index_b, K negatives),
    P_s = exp(m_t[idx]ᵀ v_s / τ) / Z_s and P_t = exp(m_s[idx]ᵀ v_t / τ) / Z_t (B, K+1),

        crd = nce(P_s) + nce(P_t)            (nce as in the module docstring, P_n = 1 / N)

    then, without gradient, m[index] <- normalize(momentum · m[index] + (1 − momentum) · v)
    on both sides. Z is fixed at the first call to mean(exp-scores) · N, as in the official
    code. The trainer's total is CE + β · crd with β = 0.8 (+ KD with weight 1 for CRD+KD);
    the paper taps the penultimate (pooled) features of both networks.

    Note:
        As the official code (RepDistiller) and torchdistill's CRDLoss, whose values this
        matches for the same memory and negatives: K = 16384 negatives, τ = 0.07, momentum
        0.5, and negatives drawn from *other classes* (give `ContrastMemory` the labels).
        The memory is part of the loss's state: call this once per training batch.

    Args:
        student_embeddings: (B, d) the student head's output, unit rows.
        teacher_embeddings: (B, d) the teacher head's output, unit rows; not detached (the
            head learns), the teacher network's features should be.
        index: (B,) integer positions of the batch's samples in the training set, in [0, N).
        memory: the `ContrastMemory` of this training run; updated in place.
        temperature: τ > 0, default 0.07 (paper); must stay the same for one memory.
        negatives: (B, K') integer indices of the negatives, or None to let the memory draw
            its K.

    Returns:
        A scalar tensor, differentiable with respect to both embeddings.

    Raises:
        TypeError: a tensor argument is not a tensor, `memory` is not a ContrastMemory,
            float indices.
        ValueError: embeddings of different shapes or not (B, memory.dim), non-finite values,
            indices out of range, temperature <= 0 or different from the first call's.

    Example:
        >>> import torch
        >>> memory = ContrastMemory(dim=4, dataset_size=10, negatives=3)
        >>> v = torch.nn.functional.normalize(torch.rand(2, 4), dim=1)
        >>> print(crd_loss(v, v, torch.tensor([0, 1]), memory).item() > 0)
        True
    """
    tau = _check_crd(student_embeddings, teacher_embeddings, index, memory, temperature)
    negatives = memory.draw(index) if negatives is None else negatives
    _check_negatives(negatives, index, memory)
    # The positive first: idx (B, 1 + K).
    idx = torch.cat([index[:, None], negatives], dim=1)
    v_s, v_t = student_embeddings, teacher_embeddings
    m_s, m_t = memory.student[idx].to(v_s), memory.teacher[idx].to(v_s)  # (B, 1 + K, d)
    scores_s = torch.exp(torch.einsum("bkd,bd->bk", m_t, v_s) / tau)  # student anchors
    scores_t = torch.exp(torch.einsum("bkd,bd->bk", m_s, v_t) / tau)  # teacher anchors
    z_s, z_t = memory.normalizers(scores_s, scores_t, tau)
    loss = _nce(scores_s / z_s, memory.noise) + _nce(scores_t / z_t, memory.noise)
    memory.update(index, v_s, v_t)
    return loss


class CRDEmbed(nn.Module):
    """CRD's embedding head: flatten, a linear map to `dim`, L2-normalize each row.

    Args:
        in_features: the flattened feature size, an int >= 1.
        dim: d, an int >= 1, default 128 (paper).

    Example:
        >>> import torch
        >>> print(f"{CRDEmbed(8, 4)(torch.rand(3, 2, 2, 2)).norm(dim=1).max():.4f}")
        1.0000
    """

    def __init__(self, in_features, dim=128):
        super().__init__()
        self.linear = nn.Linear(
            check_int(in_features, "in_features", low=1), check_int(dim, "dim", low=1)
        )

    def forward(self, features):
        return F.normalize(self.linear(features.flatten(1)), dim=1)


class ContrastMemory(nn.Module):
    """CRD's memory bank: one running embedding per training sample and network.

    Buffers `student` and `teacher` (N, d) start uniform in ±1/sqrt(d/3) (the official
    initialization) from a local generator seeded by `seed`; `draw` samples negatives with
    a second local generator. With `labels`, negatives come only from other classes (the
    official CIFAR-100 "exact" sampling); without, uniformly from all N samples.

    Args:
        dim: d, the embeddings' size, an int >= 1.
        dataset_size: N, the number of training samples, an int >= 2.
        negatives: K, negatives per anchor, an int >= 1, default 16384 (paper); drawn with
            replacement, so K may exceed N.
        momentum: the memory's update rate in [0, 1), default 0.5 (paper).
        labels: optional (N,) integer class labels of the training set.
        seed: an int, the seed of the initialization and of the negatives.

    Example:
        >>> memory = ContrastMemory(dim=4, dataset_size=10, negatives=3)
        >>> print(tuple(memory.draw(torch.tensor([0, 5])).shape))
        (2, 3)
    """

    def __init__(
        self, dim, dataset_size, negatives=16384, momentum=0.5, labels=None, seed=0
    ):
        super().__init__()
        dim = check_int(dim, "dim", low=1)
        size = check_int(dataset_size, "dataset_size", low=2)
        self.negatives = check_int(negatives, "negatives", low=1)
        self.momentum = check_real(momentum, "momentum", low=0, high=1, high_open=True)
        self.noise = 1.0 / size  # P_n, NCE's uniform noise distribution
        generator = torch.Generator().manual_seed(check_int(seed, "seed"))
        bound = 1.0 / math.sqrt(dim / 3)
        for name in ("student", "teacher"):
            entries = (torch.rand(size, dim, generator=generator) * 2 - 1) * bound
            self.register_buffer(name, entries)
        self.register_buffer("z", torch.full((2,), -1.0))  # Z_s, Z_t; -1: not fixed yet
        self.temperature = None  # the τ at which Z was fixed
        self.sampler = torch.Generator().manual_seed(seed + 1)
        self.labels = None if labels is None else _check_dataset_labels(labels, size)
        if self.labels is not None:
            # Sample indices sorted by class: class y fills slots [start_y, start_y + n_y).
            self.order = torch.argsort(self.labels, stable=True)
            self.counts = torch.bincount(self.labels)
            self.starts = torch.cumsum(self.counts, 0) - self.counts

    def draw(self, index):
        """(B, K) negative indices for the samples `index`, from other classes if labelled."""
        shape = (index.shape[0], self.negatives)
        if self.labels is None:
            size = self.student.shape[0]
            return torch.randint(size, shape, generator=self.sampler).to(index.device)
        y = self.labels[index.cpu()]
        n_y, start_y = self.counts[y][:, None], self.starts[y][:, None]
        # A uniform slot among the N − n_y of other classes, then skip over class y's block.
        slot = (
            torch.rand(shape, generator=self.sampler) * (len(self.order) - n_y)
        ).long()
        slot = slot + (slot >= start_y) * n_y
        return self.order[slot].to(index.device)

    def normalizers(self, scores_s, scores_t, temperature):
        """Z_s, Z_t: fixed at the first call to mean(exp-scores) · N."""
        if self.temperature is None:
            self.temperature = temperature
            means = torch.stack([scores_s.detach().mean(), scores_t.detach().mean()])
            self.z.copy_(means * self.student.shape[0])
        return self.z[0], self.z[1]

    @torch.no_grad()
    def update(self, index, student_embeddings, teacher_embeddings):
        """m[index] <- normalize(momentum · m[index] + (1 − momentum) · v), both networks."""
        pairs = ((self.student, student_embeddings), (self.teacher, teacher_embeddings))
        for bank, v in pairs:
            mixed = self.momentum * bank[index] + (1 - self.momentum) * v.to(bank)
            bank[index] = F.normalize(mixed, dim=1)


# ---------------------------------------------------------------------------------------------


def _nce(p, noise):
    # p (B, 1 + K): normalized scores, the positive first; noise = P_n.
    k_pn = (p.shape[1] - 1) * noise
    log_positive = torch.log(p[:, 0] / (p[:, 0] + k_pn + NCE_EPS))
    log_negatives = torch.log(k_pn / (p[:, 1:] + k_pn + NCE_EPS))
    return -(log_positive.sum() + log_negatives.sum()) / p.shape[0]


def _check_crd(student_embeddings, teacher_embeddings, index, memory, temperature):
    s_name, t_name = "student_embeddings", "teacher_embeddings"
    check_tensor(student_embeddings, s_name, dims=2, finite=True)
    check_tensor(teacher_embeddings, t_name, dims=2, finite=True)
    check_same_shape(student_embeddings, teacher_embeddings, s_name, t_name)
    if not isinstance(memory, ContrastMemory):
        raise TypeError(f"memory must be a ContrastMemory, got {type(memory).__name__}")
    (batch, dim), (size, memory_dim) = student_embeddings.shape, memory.student.shape
    if dim != memory_dim:
        raise ValueError(
            f"the embeddings must have the memory's size {memory_dim}, got shape "
            f"{tuple(student_embeddings.shape)}"
        )
    check_labels(index, "index", batch, size, what="training-set positions")
    tau = check_real(temperature, "temperature", low=0, low_open=True)
    if memory.temperature is not None and tau != memory.temperature:
        raise ValueError(
            f"temperature must stay {memory.temperature} for this memory (its Z was fixed "
            f"at that temperature), got {tau}; start a new ContrastMemory to change it"
        )
    return tau


def _check_negatives(negatives, index, memory):
    check_tensor(negatives, "negatives", dims=2)
    if negatives.shape[0] != index.shape[0]:
        raise ValueError(
            f"negatives must have one row per sample ({index.shape[0]}), got shape "
            f"{tuple(negatives.shape)}"
        )
    size, count = memory.student.shape[0], negatives.numel()
    check_labels(
        negatives.flatten(), "negatives", count, size, "training-set positions"
    )


def _check_dataset_labels(labels, size):
    check_tensor(labels, "labels", dims=1)
    classes = int(labels.max()) + 1 if labels.numel() else 1
    check_labels(labels, "labels", size, classes)
    if int((torch.bincount(labels.cpu()) > 0).sum()) < 2:
        raise ValueError(
            "labels must hold at least 2 classes: negatives come from other ones"
        )
    return labels.cpu()
