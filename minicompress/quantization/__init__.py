"""Quantization: uniform quantizers, calibration observers, float formats, and post-training
quantization of whole models (fake-quantized copies that show the accuracy of the integer model).

Vocabulary: `bits`, `symmetric` (z = 0), `signed` (grid [−2^(b−1), 2^(b−1) − 1] or
[0, 2^b − 1]), `restricted` (signed grid without −2^(b−1)), `axis` (per-channel dimension,
None = per-tensor), `scale`, `zero_point` (torch's meanings). Weights are
`torch.nn.utils.parametrize` parametrizations (they compose with pruning masks, `state_dict`
and optimizers work); activations are modules inserted with torch.fx.

    quantizers      qrange, qparams, quantize, dequantize, fake_quantize (straight-through
                    gradient); cores affine_qparams, symmetric_qparams, round_to_grid,
                    from_grid, fake_quantize_ste; EPS
    observers       Observer, MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver,
                    MSEObserver, EntropyObserver; OBSERVERS (name -> class)
    range_search    Histogram, percentile_range, mse_range, entropy_range, kl_divergences
                    (the cores of the histogram observers)
    fake_quant      FakeQuantWeight (weight parametrization, packs itself), ActQuant
                    (observer, then frozen qparams), DynamicActQuant, range_qparams
    folding         fold_batchnorm (Conv + BatchNorm -> Conv), fold_bn_weights, FOLDABLE
    ptq             quantize_weights (weight-only), quantize_dynamic, quantize_ptq (static,
                    calibrated), quantizable_layers, QUANTIZED_TYPES
    calibration     insert_before_layers (torch.fx), calibrate, activation_quantizers,
                    check_loader
    packing         pack_bits, unpack_bits, packed_nbytes; the `pack`/`unpack` protocol that
                    `measure.size_bytes(model, format="packed")` stores
    float_formats   FLOAT_FORMATS, round_trip, round_trip_error, CastWeight (float16/bfloat16)
    ste             straight_through, round_ste, grad_scale (the gradient tricks of QAT)
    qat             prepare_qat (quantization-aware training), convert (-> the PTQ inference
                    model), qat_quantizers, QAT_METHODS ("ste", "ste_fixed", "lsq", "lsq+",
                    "pact", "dorefa")
    qat_ste         STEWeight, EMAActQuant, FixedRangeActQuant (Jacob et al. 2018), ConvBN
                    (BatchNorm folded during training, Krishnamoorthi 2018)
    lsq             lsq_quantize, lsq_plus_quantize, LSQWeight, LSQActQuant, LSQPlusActQuant
    pact            pact_quantize, PACTActQuant
    dorefa          quantize_k, dorefa_weight, dorefa_activation, DoReFaWeight, DoReFaActQuant
    frozen          FrozenQuantWeight, frozen_act_quant (what convert installs)
    integer         to_integer (integer-only inference, Jacob et al. 2018), integer_plan;
                    IntegerLinear, IntegerConv, QuantizeInput, IntegerReLU, IntegerMaxPool,
                    IntegerAvgPool; cores quantize_multiplier, rounding_doubling_high_mul,
                    rounding_right_shift, requantize, integer_matmul, im2col,
                    accumulator_bound; INT32_MAX
    backend         to_backend (torch's int8 CPU kernels with our scales), Int8Linear,
                    Int8Conv2d, Int8Quantize; ENGINES
    export          export_onnx (float, pruned, QDQ int8), OnnxModel (onnxruntime session); OPSET
    equalization    equalize (cross-layer equalization), equalization_pairs; cores
                    equalization_scales, equalize_pair, input_ranges
    bias_correction bias_correction (empirical); core bias_shift; quantized_layers,
                    weight_pair, layer_inputs, call_order
    adaround        adaround, AdaRoundWeight (packs itself); cores rectified_sigmoid,
                    rounding_regularizer, annealed_beta, optimize_rounding; ZETA, GAMMA

Extreme and non-uniform weights (each a parametrization that packs itself, applied to a copy):
    binary          binarize (BinaryConnect, XNOR-Net), BINARY_METHODS, BinaryConnectWeight,
                    XnorWeight, BinaryActivation, ClipLatentWeights, glorot_scale; cores
                    sign_ste, binaryconnect_weight, xnor_weight, binary_activation
    ternary         ternarize (TWN, TTQ), TERNARY_METHODS, TernaryWeight, TrainedTernaryWeight;
                    cores twn_ternarize, ttq_ternarize
    power_of_two    quantize_power_of_two (weights on {0, ±2^k}), quantize_power_of_two_scales,
                    PowerOfTwoWeight, PowerOfTwoScaleWeight, ROUNDINGS, SCALE_ROUNDINGS,
                    scale_rounding_error; cores round_power_of_two, log_rounding, linear_rounding
    kmeans          quantize_kmeans (Deep Compression weight sharing), KMeansWeight, INITS,
                    kmeans_storage, compression_rate; cores linear_init, density_init,
                    random_init, kmeans_1d
    mixed_precision quantize_mixed, layer_sensitivity, quantization_error, allocate_bits,
                    weight_bytes, WEIGHT_SCHEMES, Scheme
"""

from .binary import (
    BINARY_METHODS,
    BinaryActivation,
    BinaryConnectWeight,
    ClipLatentWeights,
    XnorWeight,
    binarize,
    binary_activation,
    binaryconnect_weight,
    glorot_scale,
    sign_ste,
    xnor_weight,
)
from .calibration import activation_quantizers, calibrate, check_loader, insert_before_layers
from .fake_quant import ActQuant, DynamicActQuant, FakeQuantWeight, range_qparams
from .float_formats import FLOAT_FORMATS, CastWeight, round_trip, round_trip_error
from .folding import FOLDABLE, fold_batchnorm, fold_bn_weights
from .kmeans import (
    INITS,
    KMeansWeight,
    compression_rate,
    density_init,
    kmeans_1d,
    kmeans_storage,
    linear_init,
    quantize_kmeans,
    random_init,
)
from .mixed_precision import (
    WEIGHT_SCHEMES,
    Scheme,
    allocate_bits,
    layer_sensitivity,
    quantization_error,
    quantize_mixed,
    weight_bytes,
)
from .observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .packing import pack_bits, packed_nbytes, unpack_bits
from .power_of_two import (
    ROUNDINGS,
    SCALE_ROUNDINGS,
    PowerOfTwoScaleWeight,
    PowerOfTwoWeight,
    linear_rounding,
    log_rounding,
    quantize_power_of_two,
    quantize_power_of_two_scales,
    round_power_of_two,
    scale_rounding_error,
)
from .ptq import (
    QUANTIZED_TYPES,
    quantizable_layers,
    quantize_dynamic,
    quantize_ptq,
    quantize_weights,
)
from .quantizers import (
    EPS,
    affine_qparams,
    dequantize,
    fake_quantize,
    fake_quantize_ste,
    from_grid,
    qparams,
    qrange,
    quantize,
    round_to_grid,
    symmetric_qparams,
)
from .range_search import (
    Histogram,
    entropy_range,
    kl_divergences,
    mse_range,
    percentile_range,
)
from .ternary import (
    TERNARY_METHODS,
    TernaryWeight,
    TrainedTernaryWeight,
    ternarize,
    ttq_ternarize,
    twn_ternarize,
)

# Quantization-aware training.
from .dorefa import (
    DoReFaActQuant,
    DoReFaWeight,
    dorefa_activation,
    dorefa_weight,
    quantize_k,
)
from .frozen import FrozenQuantWeight, frozen_act_quant
from .lsq import (
    LSQActQuant,
    LSQPlusActQuant,
    LSQWeight,
    lsq_plus_quantize,
    lsq_quantize,
)
from .pact import PACTActQuant, pact_quantize
from .qat import QAT_METHODS, convert, prepare_qat, qat_quantizers
from .qat_ste import ConvBN, EMAActQuant, FixedRangeActQuant, STEWeight
from .ste import grad_scale, round_ste, straight_through

# Integer inference and deployment.
from .backend import ENGINES, Int8Conv2d, Int8Linear, Int8Quantize, to_backend
from .export import OPSET, OnnxModel, export_onnx
from .integer import (
    INT32_MAX,
    IntegerAvgPool,
    IntegerConv,
    IntegerLinear,
    IntegerMaxPool,
    IntegerReLU,
    QuantizeInput,
    accumulator_bound,
    im2col,
    integer_matmul,
    integer_plan,
    quantize_multiplier,
    requantize,
    rounding_doubling_high_mul,
    rounding_right_shift,
    to_integer,
)

# Post-training refinements: equalization, bias correction, adaptive rounding.
from .adaround import (
    GAMMA,
    ZETA,
    AdaRoundWeight,
    adaround,
    annealed_beta,
    optimize_rounding,
    rectified_sigmoid,
    rounding_regularizer,
)
from .bias_correction import (
    bias_correction,
    bias_shift,
    call_order,
    layer_inputs,
    quantized_layers,
    weight_pair,
)
from .equalization import (
    equalization_pairs,
    equalization_scales,
    equalize,
    equalize_pair,
    input_ranges,
)
