"""Binary weights (one bit each) and binary activations: BinaryConnect and XNOR-Net.

Courbariaux, Bengio, David, "BinaryConnect: Training Deep Neural Networks with binary weights
during propagations", NeurIPS 2015, arXiv:1511.00363.
Rastegari, Ordonez, Redmon, Farhadi, "XNOR-Net: ImageNet Classification Using Binary
Convolutional Neural Networks", ECCV 2016, arXiv:1603.05279.

    BinaryConnect   Ŵ = H·sign(W),      ∂L/∂W = ∂L/∂Ŵ · 1[|W| <= H]      (H fixed per layer)
    XNOR-Net        Ŵ_c = α_c·sign(W_c), α_c = ‖W_c‖₁ / n                  (per output filter c)
                    ∂L/∂W_i = ∂L/∂Ŵ_i · (1/n + α_c·1[|W_i| <= 1])          (paper, §3.1)
    activations     x̂ = sign(x),        ∂L/∂x = ∂L/∂x̂ · 1[|x| <= 1]     (XNOR-Net without K)

sign(0) = +1 for weights, so every weight is exactly one bit. The real-valued W is kept and
trained (the "latent" weight); the layer computes with Ŵ. Every weight parametrization here
packs itself as 1-bit signs plus its scale(s) (`measure.size_bytes(model, "packed")`).

Entry points: binarize(model, method="xnor", binary_activations=False, exclude=()) returns a
copy; BINARY_METHODS (name -> maker); BinaryConnectWeight, XnorWeight, BinaryActivation;
ClipLatentWeights (a `train.fit` callback: BinaryConnect's clip after each update);
cores sign_ste, binaryconnect_weight, xnor_weight, binary_activation; glorot_scale.

Note (paper vs code): BinaryConnect's paper binarizes to ±1 and relies on BatchNorm to fix the
scale; the authors' released code binarizes to ±H with H = sqrt(1.5 / (fan_in + fan_out))
("Glorot") and clips the latent weights to [−H, H]. Our networks have no BatchNorm, so H
defaults to the code's value; `BinaryConnectWeight(scale=1.0)` is the paper's ±1.
"""

import copy
import math

import torch
from torch import nn

from .. import _checks
from ._install import parametrizations_of, quantize_layers
from .calibration import insert_before_layers
from .packing import pack_bits, unpack_bits
from .ptq import quantizable_layers

__all__ = [
    "sign_ste",
    "binaryconnect_weight",
    "xnor_weight",
    "binary_activation",
    "glorot_scale",
    "BinaryConnectWeight",
    "XnorWeight",
    "BinaryActivation",
    "ClipLatentWeights",
    "BINARY_METHODS",
    "binarize",
]


def sign_ste(x, bound=1.0):
    """Core: sign(x) in {−1, +1} (sign(0) = +1); gradient 1[|x| <= bound] (clipped STE)."""
    b = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    # Forward: b + 0. Backward: sign counts as the identity inside [−bound, bound], 0 outside
    # (the derivative of hardtanh; Hubara et al. 2016, arXiv:1602.02830).
    return b.detach() + (x - x.detach()) * (x.abs() <= bound)


def binaryconnect_weight(w, H):
    """Core of BinaryConnect: H·sign(W) forward; ∂L/∂W = ∂L/∂Ŵ where |W| <= H, else 0."""
    b = torch.where(w >= 0, H, -H).to(w.dtype)
    return b.detach() + (w - w.detach()) * (w.abs() <= H)


def xnor_weight(w):
    """Core of XNOR-Net's binary weights: α_c·sign(W_c), α_c = mean |W_c| per filter c (dim 0).

    The gradient is the paper's §3.1 formula ∂L/∂W_i = ∂L/∂Ŵ_i (1/n + α_c·1[|W_i| <= 1]), the
    diagonal of the Jacobian of α·sign(W) (the paper drops the terms of α through W_j, j != i).
    """
    n = w[0].numel()  # per filter: C_in·kH·kW (conv) or in_features (Linear)
    alpha = w.detach().abs().reshape(len(w), -1).mean(1)  # (C_out,)
    alpha = alpha.reshape(-1, *([1] * (w.dim() - 1)))  # (C_out, 1, ...) to broadcast
    signs = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    slope = 1.0 / n + alpha * (w.abs() <= 1)
    return (alpha * signs).detach() + (w - w.detach()) * slope


def binary_activation(x):
    """Core of the binary activation: sign(x), gradient 1[|x| <= 1] (clipped STE).

    sign(0) = 0 here, so the zeros a ReLU produced stay zero: after a ReLU the activations
    are {0, 1} (the AND-popcount form of the binary dot product), elsewhere {−1, +1}.
    """
    return torch.sign(x).detach() + (x - x.detach()) * (x.abs() <= 1)


def glorot_scale(weight):
    """H = sqrt(1.5 / (fan_in + fan_out)), the BinaryConnect code's default ±H.

    fan_in = C_in·kH·kW and fan_out = C_out·kH·kW (Glorot & Bengio 2010); a Linear weight
    (out, in) has fan_in = in and fan_out = out.
    """
    receptive = math.prod(weight.shape[2:])
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(1.5 / (fan_in + fan_out))


class BinaryConnectWeight(nn.Module):
    """Parametrization W -> H·sign(W) with a fixed H; the latent W lives in [−H, H].

    Args:
        scale: H, a number > 0 (1.0 is the paper's ±1; `glorot_scale(W)` the code's).

    Registering it clips the stored weight to [−H, H] (`right_inverse`); during training
    `ClipLatentWeights` clips after every optimizer step, as BinaryConnect's Algorithm 1 does.

    Example:
        >>> BinaryConnectWeight(scale=0.5)(torch.tensor([[0.3, -0.1, 0.0, -2.0]]))
        tensor([[ 0.5000, -0.5000,  0.5000, -0.5000]])
    """

    def __init__(self, scale=1.0):
        super().__init__()
        scale = _checks.check_real(scale, "scale", low=0, low_open=True)
        self.scale = float(
            torch.tensor(scale, dtype=torch.float32)
        )  # the value float32 weights see

    def forward(self, weight):
        return binaryconnect_weight(weight, self.scale)

    def right_inverse(self, weight):
        return weight.clamp(-self.scale, self.scale)

    def pack(self, weight):
        """1-bit signs (1 = +H) and H as a plain number."""
        return _pack_signs(weight, self.scale, axis=None)

    @staticmethod
    def unpack(packed):
        return _unpack_signs(packed)

    def extra_repr(self):
        return f"scale={self.scale:.4g}"


class XnorWeight(nn.Module):
    """Parametrization W -> α_c·sign(W_c) with α_c = mean |W_c| per output filter (XNOR-Net).

    α is the L2-optimal scale of a binary approximation: it minimises ‖W_c − α·B‖² over α for
    B = sign(W_c) (Rastegari et al., eq. 2-4).

    Example:
        >>> XnorWeight()(torch.tensor([[0.5, -1.5], [0.2, 0.2]]))   # α = 1.0 and 0.2
        tensor([[ 1.0000, -1.0000],
                [ 0.2000,  0.2000]])
    """

    def forward(self, weight):
        return xnor_weight(weight)

    def pack(self, weight):
        """1-bit signs and the float32 α of each filter."""
        alpha = weight.detach().abs().reshape(len(weight), -1).mean(1)
        return _pack_signs(weight, alpha, axis=0)

    @staticmethod
    def unpack(packed):
        return _unpack_signs(packed)


class BinaryActivation(nn.Module):
    """x -> sign(x): the binary input of an XNOR-Net layer, without the scale K (see Note).

    Note: XNOR-Net also multiplies each output position of a binary convolution by K, the
    mean |x| over channels averaged over that position's kH x kW window (§3.2), and puts a
    BatchNorm before every binarization. Our networks have no BatchNorm, and on LeNet-5 a
    per-sample scale β = mean|x| (K for a Linear layer) made fine-tuning clearly worse than
    no scale, so K is dropped: the next layer's bias and the weights' α carry the scale. The widely used PyTorch reproduction of XNOR-Net
    (github.com/jiecaoyu/XNOR-Net-PyTorch) binarizes activations the same way, with sign alone.
    """

    def __init__(self, name="activation"):
        super().__init__()
        self.name = name

    def forward(self, x):
        return binary_activation(x)

    def extra_repr(self):
        return f"name={self.name!r}"


class ClipLatentWeights:
    """`train.fit` callback: after every optimizer step, clip each BinaryConnect layer's latent
    weight to [−H, H] (BinaryConnect, Algorithm 1), so no weight drifts where its gradient is 0."""

    def after_step(self, model, step):
        with torch.no_grad():
            for name, part in parametrizations_of(model, BinaryConnectWeight).items():
                original = model.get_submodule(name).parametrizations.weight.original
                original.clamp_(-part.scale, part.scale)


# name -> maker(weight) of the weight parametrization (one bit per weight for both).
BINARY_METHODS = {
    "binaryconnect": lambda weight: BinaryConnectWeight(glorot_scale(weight)),
    "xnor": lambda weight: XnorWeight(),
}


def binarize(model, method="xnor", binary_activations=False, exclude=()):
    """A copy of `model` with binary weights on every Conv/Linear layer (and binary inputs).

    Args:
        model: any nn.Module (torch.fx-traceable when `binary_activations`).
        method: "binaryconnect" (±H, H = `glorot_scale`) or "xnor" (±α per filter).
        binary_activations: also binarize the input of every binarized layer
            (`BinaryActivation`); BinaryConnect weights with binary inputs are the Binarized
            Neural Networks of Hubara et al. 2016. XNOR-Net keeps its first and last layers in
            float: pass them in `exclude`.
        exclude: names of layers left in float.

    Returns:
        The copy (a `torch.fx.GraphModule` when `binary_activations`), in `model`'s mode;
        `model` is unchanged. Train it with `train.fit` (add `ClipLatentWeights()` to the
        callbacks for BinaryConnect).

    Raises:
        ValueError: an unknown method, nothing to quantize, a layer already quantized, an
            untraceable model (with binary activations).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> _ = net[0].weight.data.copy_(torch.tensor([[0.3, -0.1]]))
        >>> binarize(net, "xnor")[0].weight.detach()   # α = (0.3 + 0.1) / 2
        tensor([[ 0.2000, -0.2000]])
    """
    make = BINARY_METHODS[_checks.check_choice(method, "method", BINARY_METHODS)]
    binary_activations = _checks.check_bool(binary_activations, "binary_activations")
    layers = quantizable_layers(model, exclude)
    if binary_activations:
        model = _checks.trace(copy.deepcopy(model), "binarize with binary_activations")
        insert_before_layers(model, layers, lambda name: BinaryActivation(name))
    return quantize_layers(model, lambda name, weight: make(weight), exclude)


# ---------------------------------------------------------------------------------------------


def _pack_signs(weight, scale, axis):
    """The 1-bit storage: bit 1 = W >= 0 (+scale), bit 0 = W < 0 (−scale)."""
    bits = (weight.detach() >= 0).long()
    return {
        "format": "binary",
        "shape": tuple(weight.shape),
        "dtype": str(weight.dtype).removeprefix("torch."),
        "axis": axis,
        "scale": scale if axis is not None else float(scale),
        "signs": pack_bits(bits, 1),
    }


def _unpack_signs(packed):
    shape, dtype = packed["shape"], getattr(torch, packed["dtype"])
    bits = unpack_bits(packed["signs"], 1, math.prod(shape)).reshape(shape)
    signs = (2 * bits - 1).to(dtype)
    scale = torch.as_tensor(packed["scale"], dtype=torch.float32)
    if packed["axis"] is not None:
        scale = scale.reshape(-1, *([1] * (len(shape) - 1)))
    return scale.to(dtype) * signs
