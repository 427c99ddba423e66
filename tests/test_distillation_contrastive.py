"""CRD against torchdistill's CRDLoss (the official code's loss and memory), a hand-worked NCE,
the memory's update and its class-aware negatives."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minicompress.distillation import ContrastMemory, CRDEmbed, crd_loss


def _unit(batch, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=generator), dim=1)


def test_crd_matches_torchdistill_over_two_batches():
    # torchdistill's CRDLoss reproduces the official RepDistiller loss and memory; given the
    # same memory and negatives, both the losses and the updated banks must agree. Float32:
    # torchdistill keeps τ and Z in a float32 buffer.
    mid_level = pytest.importorskip("torchdistill.losses.mid_level")
    dim, size, k = 8, 20, 6
    memory = ContrastMemory(dim, size, negatives=k, seed=3)
    reference = mid_level.CRDLoss(
        "s", "e", "t", dim, size, k, size, temperature=0.07, momentum=0.5
    )
    reference.memory_v1.copy_(memory.student)  # torchdistill's v1 is the student side
    reference.memory_v2.copy_(memory.teacher)
    generator = torch.Generator().manual_seed(0)
    for step in range(2):
        index = torch.randperm(size, generator=generator)[:4]
        negatives = torch.randint(size, (4, k), generator=generator)
        v_s, v_t = _unit(4, dim, seed=10 + step), _unit(4, dim, seed=20 + step)
        supplement = {
            "pos_idx": index,
            "contrast_idx": torch.cat([index[:, None], negatives], 1),
        }
        expected = reference(
            {"s": {"output": v_s}, "e": {"input": supplement}}, {"t": {"output": v_t}}
        )
        value = crd_loss(v_s, v_t, index, memory, negatives=negatives)
        assert_close(value, expected.reshape(()), rtol=2e-5, atol=0)
    assert_close(memory.student, reference.memory_v1, rtol=1e-6, atol=1e-7)
    assert_close(memory.teacher, reference.memory_v2, rtol=1e-6, atol=1e-7)


def test_crd_matches_a_hand_worked_nce():
    # Memory rows ±1 in one dimension, both embeddings +1, τ = 1, N = 2, one negative:
    # scores (e, 1/e), Z = mean · N = e + 1/e, K·P_n = 1/2. Both sides give the same NCE.
    memory = ContrastMemory(dim=1, dataset_size=2, negatives=1)
    memory.student.copy_(torch.tensor([[1.0], [-1.0]]))
    memory.teacher.copy_(torch.tensor([[1.0], [-1.0]]))
    ones = torch.ones(1, 1)
    value = crd_loss(
        ones,
        ones,
        torch.tensor([0]),
        memory,
        temperature=1.0,
        negatives=torch.tensor([[1]]),
    )
    p_pos, p_neg = math.e / (math.e + 1 / math.e), (1 / math.e) / (math.e + 1 / math.e)
    nce = -(math.log(p_pos / (p_pos + 0.5)) + math.log(0.5 / (p_neg + 0.5)))
    assert_close(value.item(), 2 * nce, rtol=1e-6, atol=0)


def test_crd_updates_the_memory_with_momentum_and_fixes_z_once():
    memory = ContrastMemory(dim=4, dataset_size=10, negatives=5, seed=1)
    old = memory.student[3].clone()
    v_s, v_t = _unit(2, 4, seed=2), _unit(2, 4, seed=3)
    crd_loss(v_s, v_t, torch.tensor([3, 7]), memory)
    assert_close(memory.student[3], F.normalize(0.5 * old + 0.5 * v_s[0], dim=0))
    z = memory.z.clone()
    crd_loss(v_s, v_t, torch.tensor([1, 2]), memory)
    assert torch.equal(memory.z, z) and (z > 0).all()
    with pytest.raises(ValueError, match="temperature must stay 0.07 for this memory"):
        crd_loss(v_s, v_t, torch.tensor([1, 2]), memory, temperature=0.1)


def test_crd_trains_both_embedding_heads():
    head_s, head_t = CRDEmbed(6, 4), CRDEmbed(10, 4)
    memory = ContrastMemory(dim=4, dataset_size=12, negatives=8)
    teacher_features = torch.rand(
        3, 10
    )  # detached teacher features: only the head learns
    loss = crd_loss(
        head_s(torch.rand(3, 6)),
        head_t(teacher_features),
        torch.tensor([0, 4, 9]),
        memory,
    )
    loss.backward()
    assert (
        head_s.linear.weight.grad.abs().sum() > 0
        and head_t.linear.weight.grad.abs().sum() > 0
    )


def test_memory_draws_negatives_from_other_classes_reproducibly():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    memory = ContrastMemory(
        dim=4, dataset_size=10, negatives=500, labels=labels, seed=5
    )
    index = torch.tensor([0, 2, 5, 9])
    negatives = memory.draw(index)
    assert (labels[negatives] != labels[index][:, None]).all()
    for row, sample in zip(negatives, index):  # every other-class sample is reachable
        assert set(row.tolist()) == set(
            torch.nonzero(labels != labels[sample]).flatten().tolist()
        )
    again = ContrastMemory(dim=4, dataset_size=10, negatives=500, labels=labels, seed=5)
    assert torch.equal(again.draw(index), negatives) and torch.equal(
        again.student, memory.student
    )


def test_embed_head_returns_unit_rows():
    out = CRDEmbed(12, dim=5)(torch.rand(4, 3, 2, 2))
    assert tuple(out.shape) == (4, 5)
    assert_close(out.norm(dim=1), torch.ones(4))


def test_crd_refuses_bad_input():
    memory = ContrastMemory(dim=4, dataset_size=10, negatives=3)
    v = _unit(2, 4, seed=0)
    with pytest.raises(
        ValueError, match=r"index must be training-set positions in \[0, 9\]"
    ):
        crd_loss(v, v, torch.tensor([0, 10]), memory)
    with pytest.raises(
        TypeError, match="index must hold integer training-set positions"
    ):
        crd_loss(v, v, torch.tensor([0.0, 1.0]), memory)
    with pytest.raises(TypeError, match="memory must be a ContrastMemory, got dict"):
        crd_loss(v, v, torch.tensor([0, 1]), {})
    with pytest.raises(
        ValueError, match="the embeddings must have the memory's size 4"
    ):
        crd_loss(_unit(2, 5, 0), _unit(2, 5, 1), torch.tensor([0, 1]), memory)
    with pytest.raises(
        ValueError,
        match="student_embeddings and teacher_embeddings must have the same shape",
    ):
        crd_loss(v, v[:1], torch.tensor([0, 1]), memory)
    with pytest.raises(
        ValueError, match=r"negatives must have one row per sample \(2\)"
    ):
        crd_loss(
            v,
            v,
            torch.tensor([0, 1]),
            memory,
            negatives=torch.zeros(3, 2, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="labels must hold at least 2 classes"):
        ContrastMemory(dim=4, dataset_size=3, labels=torch.tensor([1, 1, 1]))
    with pytest.raises(
        ValueError, match=r"momentum must be a finite number in \[0, 1\)"
    ):
        ContrastMemory(dim=4, dataset_size=3, momentum=1.0)


def test_a_refused_call_leaves_the_memory_as_it_was():
    memory = ContrastMemory(dim=4, dataset_size=10, negatives=3, seed=2)
    v = _unit(2, 4, seed=0)
    crd_loss(v, v, torch.tensor([0, 1]), memory)
    state = {name: tensor.clone() for name, tensor in memory.state_dict().items()}
    sampler = memory.sampler.get_state()
    for bad in (torch.tensor([0, 10]), torch.tensor([0.0, 1.0])):
        with pytest.raises((ValueError, TypeError)):
            crd_loss(v, v, bad, memory)
    with pytest.raises(ValueError, match="negatives must be training-set positions"):
        crd_loss(
            v, v, torch.tensor([0, 1]), memory, negatives=torch.tensor([[0], [12]])
        )
    assert all(torch.equal(memory.state_dict()[name], state[name]) for name in state)
    assert torch.equal(memory.sampler.get_state(), sampler)


def test_memory_and_head_defaults_are_the_papers():
    memory, head = ContrastMemory(128, 50), CRDEmbed(32)
    assert (
        memory.negatives == 16384
        and memory.momentum == 0.5
        and head.linear.out_features == 128
    )
    negatives = memory.draw(torch.tensor([0, 49]))
    assert tuple(negatives.shape) == (2, 16384) and int(negatives.max()) < 50
    v = F.normalize(torch.rand(2, 128), dim=1)
    assert torch.isfinite(crd_loss(v, v, torch.tensor([0, 49]), memory))
