"""k-means weight sharing: a per-layer codebook of 2^b floats and a b-bit index per weight.

Han, Mao, Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding", ICLR 2016, arXiv:1510.00149, §3.

    cluster   C = argmin Σ_k Σ_{W_i ∈ cluster k} |W_i − C_k|²  (1-D k-means, Lloyd's iterations)
              from a linear initialisation C_k = min W + k·(max W − min W)/(2^b − 1), which the
              paper found best (Fig. 8: it keeps centroids on the rare large weights)
    forward   Ŵ_i = C[I_i]                                  (I_i, the b-bit index of weight i)
    gradient  ∂L/∂C_k = Σ_i ∂L/∂Ŵ_i · 1[I_i = k]            (eq. 3: summed over the cluster)
    storage   n·b bits of indices + 2^b·32 bits of codebook per layer; the compression rate
              is r = n·32 / (n·b + 2^b·32)                   (eq. 1 with 32-bit floats)

Fine-tuning trains the centroids (and the biases) with `train.fit`: the indices stay fixed and
the stored float weights receive no gradient, because the layer computes with C[I] only.

With pruning: a weight that is exactly zero when clustered (a pruned weight under a `Mask`)
gets index 0, whose codebook entry is a constant 0 that fine-tuning never moves; the other
2^b − 1 entries are the centroids of the nonzero weights. Pruned zeros stay zero.

Entry points: quantize_kmeans(model, bits=4, init="linear", iterations=30, exclude=(),
seed=0) returns a copy; KMeansWeight; INITS; kmeans_storage(model), compression_rate(...);
cores linear_init, density_init, random_init, kmeans_1d.
"""

import math

import torch
from torch import nn

from .. import _checks
from ._install import parametrizations_of, quantize_layers
from .packing import pack_bits, packed_nbytes, unpack_bits

__all__ = [
    "linear_init",
    "density_init",
    "random_init",
    "INITS",
    "kmeans_1d",
    "KMeansWeight",
    "quantize_kmeans",
    "kmeans_storage",
    "compression_rate",
]

# Codebooks up to this many entries are stored as plain numbers in the packed file: a tensor
# record costs about 250 bytes of torch.save framing plus 4 per entry, a pickled float 9 bytes,
# so up to about 50 entries the plain numbers are smaller.
PLAIN_CODEBOOK = 32


def linear_init(w, k, generator=None):
    """k centroids evenly spaced over [min W, max W] (Deep Compression's choice)."""
    return torch.linspace(float(w.min()), float(w.max()), k, dtype=w.dtype)


def density_init(w, k, generator=None):
    """k centroids at evenly spaced quantiles of W: dense where the weights are dense."""
    return torch.quantile(w.double(), torch.linspace(0, 1, k, dtype=torch.float64)).to(
        w.dtype
    )


def random_init(w, k, generator=None):
    """Forgy: k weights drawn at random without replacement (the generator seeds the draw)."""
    return w[torch.randperm(w.numel(), generator=generator)[:k]].sort().values


INITS = {"linear": linear_init, "density": density_init, "random": random_init}


def kmeans_1d(w, centroids, iterations):
    """Core: Lloyd's k-means on the 1-D tensor w from sorted `centroids`.

    Each iteration assigns every weight to its nearest centroid and moves each centroid to the
    mean of its weights (an empty cluster keeps its centroid); it stops early once no
    assignment changes. Returns (centroids sorted, indices of w).
    """
    k, indices = len(centroids), None
    for _ in range(iterations):
        new = _nearest(w, centroids)
        if indices is not None and torch.equal(new, indices):
            break
        indices = new
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, indices, w.double())
        counts = torch.bincount(indices, minlength=k)
        means = (sums / counts.clamp_min(1)).to(w.dtype)
        centroids = torch.where(counts > 0, means, centroids).sort().values
    return centroids, _nearest(w, centroids)


class KMeansWeight(nn.Module):
    """Parametrization W -> C[I]: a trainable codebook C and fixed b-bit indices I.

    Args:
        centroids: the trainable codebook entries, a 1-D float tensor (2^b of them, or 2^b − 1
            when `zero_code`).
        indices: an integer tensor of the weight's shape, entries in [0, 2^b).
        bits: b, an int in [1, 8].
        zero_code: index 0 means a constant 0 (pruned weights); C = [0, centroids...].

    `centroids` is an `nn.Parameter`; autograd of C[I] sums each weight's gradient into its
    centroid (Deep Compression eq. 3). Build one from a weight with `from_weight`.

    Example:
        >>> km = KMeansWeight.from_weight(torch.tensor([[0.1, 0.2, 0.9, 1.0]]), bits=1)
        >>> km.centroids.data, km(torch.zeros(1, 4)).detach()
        (tensor([0.1500, 0.9500]), tensor([[0.1500, 0.1500, 0.9500, 0.9500]]))
    """

    def __init__(self, centroids, indices, bits, zero_code=False):
        super().__init__()
        self.bits = _checks.check_int(bits, "bits", low=1, high=8)
        self.zero_code = _checks.check_bool(zero_code, "zero_code")
        _checks.check_tensor(centroids, "centroids", dims=1, finite=True)
        _checks.check_tensor(indices, "indices")
        entries = len(centroids) + self.zero_code
        if entries > 2**bits:
            raise ValueError(
                f"a {bits}-bit codebook holds {2**bits} entries, got {entries} "
                f"({len(centroids)} centroids{' + the zero code' if zero_code else ''})"
            )
        if indices.is_floating_point() or indices.numel() == 0:
            raise TypeError("indices must be a non-empty integer tensor")
        if int(indices.min()) < 0 or int(indices.max()) >= entries:
            raise ValueError(f"indices must lie in [0, {entries - 1}]")
        self.centroids = nn.Parameter(centroids.detach().clone())
        self.register_buffer("indices", indices.detach().to(torch.int32).clone())

    @classmethod
    def from_weight(cls, weight, bits=4, init="linear", iterations=30, seed=0):
        """Cluster `weight` into 2^bits shared values (exact zeros into the zero code).

        Raises:
            ValueError: the codebook is larger than the layer (more centroids than nonzero
                weights), bits outside [1, 8], an unknown init.
        """
        bits, make_init, iterations, seed = _check_options(bits, init, iterations, seed)
        _checks.check_tensor(weight, "weight", finite=True)
        w = weight.detach().flatten()
        zero_code = bool((w == 0).any())
        k = 2**bits - zero_code
        values = w[w != 0] if zero_code else w
        if k > values.numel():
            raise ValueError(
                f"a {bits}-bit codebook has {k} centroids to fit but the layer has only "
                f"{values.numel()} {'nonzero ' if zero_code else ''}weights; use fewer bits"
            )
        generator = torch.Generator().manual_seed(seed)
        centroids, indices = kmeans_1d(
            values, make_init(values, k, generator), iterations
        )
        if zero_code:  # shift past index 0, the fixed zero
            full = torch.zeros_like(w, dtype=torch.long)
            full[w != 0] = indices + 1
            indices = full
        return cls(centroids, indices.reshape(weight.shape), bits, zero_code)

    def codebook(self):
        """The 2^b (or fewer) shared values C, index order; C[0] = 0 when `zero_code`."""
        if self.zero_code:
            return torch.cat([self.centroids.new_zeros(1), self.centroids])
        return self.centroids

    def forward(self, weight):
        # The layer computes with the codebook alone; `weight` (the stored float weight, after
        # any mask) only fixes shape and dtype. The indices were set from it when clustering.
        return self.codebook()[self.indices].to(weight.dtype)

    def pack(self, weight):
        """b-bit indices (`pack_bits`) and the codebook, plain numbers when small."""
        codebook = self.codebook().detach()
        return {
            "format": "codebook",
            "shape": tuple(weight.shape),
            "dtype": str(weight.dtype).removeprefix("torch."),
            "bits": self.bits,
            "codebook": tuple(codebook.tolist())
            if len(codebook) <= PLAIN_CODEBOOK
            else codebook,
            "indices": pack_bits(self.indices, self.bits),
        }

    @staticmethod
    def unpack(packed):
        shape = packed["shape"]
        codebook = torch.as_tensor(packed["codebook"], dtype=torch.float32)
        indices = unpack_bits(packed["indices"], packed["bits"], math.prod(shape))
        return codebook[indices].reshape(shape).to(getattr(torch, packed["dtype"]))

    def extra_repr(self):
        zero = ", zero_code" if self.zero_code else ""
        return f"bits={self.bits}, centroids={len(self.centroids)}{zero}"


def quantize_kmeans(model, bits=4, init="linear", iterations=30, exclude=(), seed=0):
    """A copy of `model` whose Conv/Linear weights share a per-layer codebook of 2^bits values.

    Args:
        model: any nn.Module; pruning masks are respected (pruned zeros get the zero code).
        bits: b, an int in [1, 8]: 2^b shared values per layer.
        init: "linear" (the paper's best), "density" or "random", see INITS.
        iterations: at most this many Lloyd iterations per layer, an int >= 1.
        exclude: names of layers left in float.
        seed: seeds the "random" initialisation.

    Returns:
        The copy, in `model`'s mode; `model` is unchanged. Fine-tune its centroids with
        `train.fit` (the indices stay fixed).

    Raises:
        ValueError: bits outside [1, 8], an unknown init, a codebook larger than a layer,
            nothing to quantize, a layer already quantized.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[-1.0, -0.8, 0.9, 1.1]]))
        >>> quantize_kmeans(net, bits=1)[0].weight.detach()
        tensor([[-0.9000, -0.9000,  1.0000,  1.0000]])
    """
    _check_options(bits, init, iterations, seed)
    return quantize_layers(
        model,
        lambda name, weight: _cluster_layer(name, weight, bits, init, iterations, seed),
        exclude,
    )


def kmeans_storage(model):
    """The bytes a k-means model needs, by arithmetic (what `size_bytes(..., "packed")` holds
    before torch.save's framing).

        indices    Σ over clustered layers of ceil(n·b / 8)
        codebook   Σ over clustered layers of 4·(number of trained centroids) (float32; the
                   zero code of a pruned layer is a flag, not an entry)
        other      every other tensor of the model's state, dense (biases, float layers)

    Returns:
        dict with "indices", "codebook", "other", "with_codebook" (indices + codebook +
        other) and "without_codebook" (indices + other), in bytes.

    Raises:
        ValueError: the model has no `KMeansWeight`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 2, bias=False))
        >>> kmeans_storage(quantize_kmeans(net, bits=2))["with_codebook"]   # 16·2/8 + 4·4
        20
    """
    from ..measure import effective_state_dict  # measure imports nothing from here

    layers = parametrizations_of(model, KMeansWeight)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no k-means layer (see quantize_kmeans)"
        )
    indices = sum(packed_nbytes(p.indices.numel(), p.bits) for p in layers.values())
    codebook = sum(4 * len(p.centroids) for p in layers.values())
    clustered = {f"{name}.weight" if name else "weight" for name in layers}
    other = sum(
        t.numel() * t.element_size()
        for key, t in effective_state_dict(model).items()
        if key not in clustered
    )
    return {
        "indices": indices,
        "codebook": codebook,
        "other": other,
        "with_codebook": indices + codebook + other,
        "without_codebook": indices + other,
    }


def compression_rate(n, bits, float_bits=32):
    """Deep Compression eq. 1: r = n·b_f / (n·log2(k) + k·b_f) for n weights shared by
    k = 2^bits values of b_f bits each.

    Example:
        >>> round(compression_rate(16, 2), 3)   # the paper's 4x4 example: 512 / (32 + 128)
        3.2
    """
    n = _checks.check_int(n, "n", low=1)
    bits = _checks.check_int(bits, "bits", low=1)
    float_bits = _checks.check_int(float_bits, "float_bits", low=1)
    k = 2**bits
    return n * float_bits / (n * bits + k * float_bits)


# ---------------------------------------------------------------------------------------------


def _nearest(w, centroids):
    """Index of the nearest of the sorted centroids for every element of w (ties go low)."""
    return torch.bucketize(w, (centroids[1:] + centroids[:-1]) / 2)


def _check_options(bits, init, iterations, seed):
    return (
        _checks.check_int(bits, "bits", low=1, high=8),
        INITS[_checks.check_choice(init, "init", INITS)],
        _checks.check_int(iterations, "iterations", low=1),
        _checks.check_int(seed, "seed"),
    )


def _cluster_layer(name, weight, bits, init, iterations, seed):
    try:
        return KMeansWeight.from_weight(weight, bits, init, iterations, seed)
    except ValueError as error:
        raise ValueError(f"layer {name!r}: {error}") from None
