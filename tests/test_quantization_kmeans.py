"""Tests of minicompress.quantization.kmeans: Deep Compression's weight sharing."""

import math

import pytest
import torch
from torch import nn

from minicompress import measure, train
from minicompress.pruning import apply_mask
from minicompress.quantization import (
    KMeansWeight,
    compression_rate,
    density_init,
    kmeans_1d,
    kmeans_storage,
    linear_init,
    quantize_kmeans,
    random_init,
)

from model_state import snapshot, unchanged


def test_linear_initialisation_spaces_the_centroids_evenly_from_min_to_max():
    w = torch.tensor([-1.0, 0.3, 2.0, 0.5, -0.2])
    # Deep Compression §3.1: linear init between [min, max] = [-1, 2], k = 4 -> step 1.
    torch.testing.assert_close(linear_init(w, 4), torch.tensor([-1.0, 0.0, 1.0, 2.0]))


def test_density_and_random_initialisations():
    w = torch.arange(9.0)
    torch.testing.assert_close(
        density_init(w, 3), torch.tensor([0.0, 4.0, 8.0])
    )  # quantiles
    drawn = random_init(w, 4, torch.Generator().manual_seed(0))
    assert len(drawn.unique()) == 4 and bool((drawn[1:] >= drawn[:-1]).all())


def test_lloyd_iterations_reach_the_cluster_means_worked_by_hand():
    w = torch.tensor([0.0, 0.1, 0.2, 0.9, 1.0, 4.0])
    # From linear init [0, 4]: {0, 0.1, 0.2, 0.9, 1.0} vs {4} -> means 0.44 and 4; the next
    # assignment is unchanged, so Lloyd stops there.
    centroids, indices = kmeans_1d(w, linear_init(w, 2), iterations=10)
    torch.testing.assert_close(centroids, torch.tensor([0.44, 4.0]))
    assert indices.tolist() == [0, 0, 0, 0, 0, 1]
    # From [0, 1] instead: {0, 0.1, 0.2} and {0.9, 1.0, 4.0} -> 0.1 and 1.9667; then 0.9 and
    # 1.0 are nearer 0.1 ... and the fixed point is {0, ..., 1.0} vs {4.0} again.
    centroids, indices = kmeans_1d(w, torch.tensor([0.0, 1.0]), iterations=10)
    torch.testing.assert_close(centroids, torch.tensor([0.44, 4.0]))


def test_centroid_gradient_is_the_sum_of_the_weight_gradients_in_its_cluster():
    # Deep Compression Fig. 3: a 2x3 weight, 2-bit codebook, gradients written out.
    w = torch.tensor(
        [[2.1, -1.0, 1.9], [0.1, -1.1, 0.0]]
    )  # 0.0 is a pruned weight -> zero code
    km = KMeansWeight(
        torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([[3, 1, 3], [2, 1, 0]]), 2, True
    )
    torch.testing.assert_close(
        km(w), torch.tensor([[2.0, -1.0, 2.0], [0.0, -1.0, 0.0]])
    )
    g = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    km(w).backward(g)
    # centroid -1 (index 1): 0.2 + 0.5; centroid 0 (index 2): 0.4; centroid 2 (index 3): 0.1 + 0.3.
    # The zero code (index 0, gradient 0.6) has no parameter: it stays 0.
    torch.testing.assert_close(km.centroids.grad, torch.tensor([0.7, 0.4, 0.4]))


def test_clustered_layer_takes_at_most_two_to_the_b_values_and_packs_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    before = snapshot(net)
    for bits in (1, 2, 4):
        quantized = quantize_kmeans(net, bits)
        for layer in (quantized[0], quantized[2]):
            w = layer.weight.detach()
            assert len(w.unique()) <= 2**bits
            part = layer.parametrizations.weight[0]
            packed = part.pack(layer.parametrizations.weight.original)
            assert torch.equal(part.unpack(packed), w)
            assert len(packed["indices"]) == math.ceil(w.numel() * bits / 8)
    assert unchanged(net, before)


def test_clustering_lowers_the_error_of_the_linear_initialisation():
    w = torch.randn(500, generator=torch.Generator().manual_seed(0))
    start = linear_init(w, 8)
    before = ((start[torch.bucketize(w, (start[1:] + start[:-1]) / 2)] - w) ** 2).sum()
    centroids, indices = kmeans_1d(w, start, iterations=30)
    after = ((centroids[indices] - w) ** 2).sum()
    assert after < before


def test_pruned_zeros_stay_zero_through_clustering_and_fine_tuning():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    mask = torch.rand(16, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    apply_mask(net[0], mask)
    quantized = quantize_kmeans(net, bits=2)
    part = quantized[0].parametrizations.weight[-1]
    assert (
        part.zero_code and len(part.centroids) == 3
    )  # 2^2 − 1 trained + the fixed zero
    data = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
    start = part.centroids.detach().clone()
    train.fit(quantized, data, epochs=2, lr=1e-2, progress=False)
    assert not torch.equal(part.centroids.detach(), start)  # the centroids trained
    w = quantized[0].weight.detach()
    assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
    assert len(w[mask].unique()) <= 3


def test_storage_arithmetic_with_and_without_the_codebook():
    net = nn.Sequential(nn.Linear(10, 6), nn.Linear(6, 2, bias=False))
    storage = kmeans_storage(quantize_kmeans(net, bits=2))
    # indices ceil(60·2/8) + ceil(12·2/8) = 15 + 3; codebooks 2·4 floats; the 6 biases dense.
    assert storage == {
        "indices": 18,
        "codebook": 32,
        "other": 24,
        "with_codebook": 74,
        "without_codebook": 42,
    }


def test_compression_rate_is_deep_compressions_equation_one():
    assert compression_rate(16, 2) == pytest.approx(16 * 32 / (16 * 2 + 4 * 32))
    assert compression_rate(10**6, 4) == pytest.approx(32 / 4, rel=1e-3)


def test_packed_file_is_within_ten_percent_of_the_arithmetic():
    # Notebook 08 checks the 784-1024-1024-10 MLP and LeNet-5; here a 256-512-10 MLP at 2 bits.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
    quantized = quantize_kmeans(net, bits=2, iterations=3)
    arithmetic = kmeans_storage(quantized)["with_codebook"]
    size = measure.size_bytes(quantized, "packed")
    assert arithmetic <= size < 1.1 * arithmetic


def test_bad_arguments_are_clear_errors_and_the_model_is_unchanged():
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    before = snapshot(net)
    with pytest.raises(
        ValueError,
        match="layer '1': a 4-bit codebook has 16 centroids to fit but the layer has only 8 weights",
    ):
        quantize_kmeans(net, bits=4)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 8\], got 9"):
        quantize_kmeans(net, bits=9)
    with pytest.raises(
        ValueError,
        match="init must be one of 'linear', 'density', 'random'; got 'kmeans\\+\\+'",
    ):
        quantize_kmeans(net, bits=1, init="kmeans++")
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_kmeans(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="no k-means layer"):
        kmeans_storage(net)
    assert unchanged(net, before)
    with pytest.raises(ValueError, match="a 1-bit codebook holds 2 entries, got 3"):
        KMeansWeight(torch.zeros(3), torch.zeros(2, dtype=torch.long), bits=1)


def test_measure_counts_each_shared_weight_once_and_not_the_codebook_again():
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    quantized = quantize_kmeans(net, bits=2)
    assert measure.count_params(quantized) == measure.count_params(net) == 8 * 4 + 4 + 4 * 2 + 2
    assert measure.summary(quantized, torch.zeros(1, 8))["params"] == 46
