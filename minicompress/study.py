"""The trade-off study: train one baseline, apply many compression methods to copies of it,
measure every result the same way, tabulate and plot.

    run_study(methods, dataset, model, ...)  -> list of rows (dicts), one per method
    plot_study(rows, path=None)              -> accuracy against size on disk, one point per method
    METHODS                                  name -> method(model, context) -> compressed model

A method receives a deep copy of the trained baseline and a `StudyContext` (the loaders, an
example input, the epoch budget for fine-tuning, the device) and returns the compressed model,
which may be the same object changed in place or a new, smaller one. The study then measures
its accuracy, parameters, nonzeros, MACs, bytes and latency with `minicompress.measure`.

Latency is measured once every method has run, all models together with
`measure.compare_latency` (one thread, finely interleaved, `latency_rounds` rounds), at two batch
sizes: one image ("latency_ms"), where a model as small as LeNet-5 spends most of its time
on call overhead, and `LATENCY_BATCH` images ("latency_b64_ms"), where the arithmetic the
MACs count dominates.
"""

import copy
import time
import warnings
from dataclasses import dataclass

import torch

from . import _checks, data, measure, models, train
from .pruning import GradualPruning, make_permanent, prune_unstructured
from .pruning.slimming import slim
from .pruning.bn_sparsity import BNSparsity
from .pruning.structured import prune_channels_to_macs
from .distillation import Distiller, Term, kd_loss
from .quantization.qat import convert, prepare_qat
from .quantization import binarize, quantize_kmeans, ternarize

__all__ = [
    "METHODS",
    "NotApplicable",
    "StudyContext",
    "run_study",
    "plot_study",
    "build_for",
]


class NotApplicable(Exception):
    """Raised by a method that cannot apply to the study's model (slimming needs BatchNorm,
    say). The study leaves that method's row out and reports why in `skipped`."""


@dataclass
class StudyContext:
    """What a method may use: data, an example input, a fine-tuning budget, a device."""

    train_loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    example_input: torch.Tensor  # (1, C, H, W), on the CPU
    epochs: (
        int  # the baseline's training epochs; fine-tuning budgets are fractions of it
    )
    lr: float
    device: torch.device
    progress: bool = False


def baseline(model, context):
    """The trained model, unchanged: the row every ratio is taken against."""
    return model


# Fine-tuning budget of the pruning methods, as a fraction of the baseline's epochs.
PRUNE_FINE_TUNE_FRACTION = 1 / 3


def magnitude_90(model, context):
    """Global magnitude pruning to 90 % sparsity (Han et al. 2015), fine-tuned for a third of
    the baseline's epochs with the pruned weights held at zero, then made permanent."""
    prune_unstructured(model, 0.9, scope="global")
    _fine_tune(model, context)
    return make_permanent(model)


def gradual_90(model, context):
    """Gradual magnitude pruning (Zhu & Gupta 2017) from 0 to 90 % in 10 steps over the first
    half of a fine-tuning run of a third of the baseline's epochs, then made permanent."""
    steps = _fine_tune_epochs(context) * len(context.train_loader)
    schedule = GradualPruning(
        0.9, begin_step=0, n_updates=10, frequency=max(1, steps // 20)
    )
    _fine_tune(model, context, callbacks=[schedule])
    return make_permanent(model)


def _fine_tune_epochs(context):
    return max(1, round(context.epochs * PRUNE_FINE_TUNE_FRACTION))


def _fine_tune(model, context, epochs=None, callbacks=()):
    # Adam at the baseline's peak rate under a one-cycle schedule, on the study's data.
    train.fit(
        model,
        context.train_loader,
        _fine_tune_epochs(context) if epochs is None else epochs,
        lr=context.lr,
        device=context.device,
        progress=context.progress,
        callbacks=callbacks,
        schedule="onecycle",
    )


# Budget of the structured rows, a tenth of the baseline's epochs each (at least one):
# channel pruning fine-tunes for it; slimming trains with sparsity for it, then fine-tunes
# for it, so that each row stays within seconds on a CPU.
STRUCTURED_FRACTION = 1 / 10
SLIM_S, SLIM_LR, SLIM_PERCENT, SLIM_VARIANT = 0.01, 0.05, 0.5, "slim"


def _structured_epochs(context):
    return max(1, int(context.epochs * STRUCTURED_FRACTION))


def channels_50_macs(model, context):
    """Channel pruning by L1 filter norm (Li et al. 2017) to 50 % of the MACs removed, a
    physically smaller model, fine-tuned for a tenth of the baseline's epochs."""
    pruned = prune_channels_to_macs(
        model.cpu(), 0.5, "l1", context.example_input, scope="layer"
    )
    _fine_tune(pruned, context, epochs=_structured_epochs(context))
    return pruned


def slim_row(model, context):
    """Network Slimming, "slim" variant (Liu et al. 2017; SlimYOLOv3's mask union across
    shortcuts): sparsity training on the BatchNorm scales (SGD, s = 0.01) for a tenth of the
    baseline's epochs, slim at percent 0.5 with activation-offset compensation, fine-tune for
    a tenth. Needs BatchNorm (try --model darknet_tiny)."""
    if not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise NotApplicable(
            f"slimming ranks BatchNorm scales and {type(model).__name__} has no BatchNorm "
            "(try --model darknet_tiny or resnet20)"
        )
    epochs = _structured_epochs(context)
    optimizer = torch.optim.SGD(model.parameters(), lr=SLIM_LR, momentum=0.9)
    train.fit(
        model,
        context.train_loader,
        epochs,
        optimizer=optimizer,
        device=context.device,
        progress=context.progress,
        callbacks=[BNSparsity(SLIM_S)],
        schedule="onecycle",
    )
    pruned = slim(model.cpu(), SLIM_PERCENT, SLIM_VARIANT, context.example_input)
    _fine_tune(pruned, context, epochs=epochs)
    return pruned


# --- distillation rows: a small student trained alone, and distilled from the baseline --------

# The student of both rows: a perceptron with one hidden layer of KD_HIDDEN units (784-64-10 on
# MNIST, 51k weights), trained for the baseline's epochs with Adam at KD_LR under a one-cycle
# schedule; kd_student adds Hinton et al.'s soft term at KD_TEMPERATURE with weight KD_W_KD
# (KD_W_CE on the labels). Both rows start from the same initialisation and see the same
# batches, so the difference between them is the teacher.
KD_HIDDEN, KD_LR, KD_TEMPERATURE, KD_W_KD, KD_W_CE = (64,), 1e-2, 4.0, 0.5, 0.5


def student_alone(model, context):
    """The distillation rows' small student (784-64-10 on MNIST) trained on the labels alone
    for the baseline's epochs: the control of kd_student."""
    student = _kd_student_model(context)
    train.fit(
        student,
        _kd_batches(context),
        context.epochs,
        lr=KD_LR,
        device=context.device,
        progress=context.progress,
        schedule="onecycle",
    )
    return student


def kd_student(model, context):
    """The same student, initialisation, batches and epochs, distilled from the trained
    baseline (Hinton et al. 2015, arXiv:1503.02531): 0.5 · CE + 0.5 · τ² KL at τ = 4."""
    student = _kd_student_model(context)
    term = Term(kd_loss, KD_W_KD, options={"temperature": KD_TEMPERATURE})
    Distiller(model.eval(), student, term, w_ce=KD_W_CE).fit(
        _kd_batches(context),
        context.epochs,
        lr=KD_LR,
        device=context.device,
        progress=context.progress,
        schedule="onecycle",
    )
    return student


def _kd_student_model(context):
    _, channels, height, _ = context.example_input.shape
    return models.build(
        "lenet300", in_channels=channels, input_size=height, hidden=KD_HIDDEN
    )


def _kd_batches(context):
    # The study's training data in an order (and with shifts) fixed by the seed the study
    # set before this row, so that both distillation rows see the same batches.
    seed = torch.initial_seed()
    dataset = context.train_loader.dataset
    if isinstance(dataset, data.RandomShift):
        dataset = copy.copy(dataset)
        dataset.generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=context.train_loader.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


# ---- quantization-aware training -----------------------------------------------------------
# LSQ (Esser et al. 2020) fine-tunes the trained model through its quantizers for a fifth of
# the baseline's epochs, then converts it to the post-training inference form (the packed
# size counts b-bit weights). SGD with momentum, as in the paper: its gradient scale
# 1/sqrt(N·Q_P) is tuned for SGD, and Adam at the baseline's rate moves the small
# per-channel steps by more than their size.
QAT_FRACTION, QAT_LR = 1 / 5, 0.005


def _lsq_row(model, context, bits):
    qat = prepare_qat(model.cpu(), "lsq", bits, bits, context.train_loader)
    optimizer = torch.optim.SGD(qat.parameters(), lr=QAT_LR, momentum=0.9)
    train.fit(
        qat,
        context.train_loader,
        max(1, round(context.epochs * QAT_FRACTION)),
        optimizer=optimizer,
        device=context.device,
        progress=context.progress,
        schedule="onecycle",
    )
    return convert(qat.cpu())


def lsq_w4a4(model, context):
    """LSQ with 4-bit weights (one learned step per output channel) and 4-bit activations,
    fine-tuned for a fifth of the baseline's epochs, converted to the PTQ inference form."""
    return _lsq_row(model, context, 4)


def lsq_w2a2(model, context):
    """LSQ with 2-bit weights and activations, as `lsq_w4a4`."""
    return _lsq_row(model, context, 2)


# --- int8 on real kernels ---------------------------------------------------------------------
INT8_CALIBRATION_BATCHES = 8  # training batches the activation observers see


def int8_backend(model, context):
    """Static int8 PTQ (BN folded, per-channel weights, min-max activations) calibrated on 8
    training batches, then run on torch's int8 CPU kernels with our scales (`to_backend`)."""
    from .quantization.backend import to_backend
    from .quantization.ptq import quantize_ptq

    if context.device.type != "cpu":
        raise NotApplicable("torch's int8 kernels run on the CPU only (use --device cpu)")
    calibration = [b for _, b in zip(range(INT8_CALIBRATION_BATCHES), context.train_loader)]
    return to_backend(quantize_ptq(model.cpu().eval(), calibration))


# --- Post-training quantization rows --------------------------------------------------------
# Calibration: the first batches of the training loader (512 images at batch size 64), no labels.
PTQ_CALIBRATION_BATCHES = 8


def ptq_int8(model, context):
    """Static post-training quantization (Krishnamoorthi 2018): BatchNorm folded, int8 weights
    per output channel, int8 activations per tensor with min-max ranges calibrated on 8
    training batches; stored as packed 8-bit codes (`quantize_ptq`). No training."""
    from .quantization import quantize_ptq

    return quantize_ptq(model.cpu(), _calibration_batches(context))


def ptq_w4(model, context):
    """4-bit weight-only post-training quantization: BatchNorm folded, weights rounded to 4
    bits per output channel (symmetric), activations in float; stored as packed 4-bit codes."""
    from .quantization import fold_batchnorm, quantize_weights

    return quantize_weights(fold_batchnorm(model.cpu()), bits=4)


def _calibration_batches(context):
    batches = []
    for inputs, _ in context.train_loader:
        batches.append(inputs)
        if len(batches) == PTQ_CALIBRATION_BATCHES:
            break
    return batches


# Extreme and non-uniform quantization rows. Binary and ternary weights train for a fifth of
# the baseline's epochs; k-means fine-tunes its centroids for a tenth (Deep Compression's and
# the EfficientML lab's single epoch at 4 bits). All three are sized in their packed format.
LOW_BIT_FRACTION, KMEANS_FRACTION = 1 / 5, 1 / 10


def xnor_row(model, context):
    """XNOR-Net binary weights, α·sign(W) with α the mean |W| of each filter (Rastegari et
    al. 2016), trained for a fifth of the baseline's epochs; 1 bit per weight."""
    binary = binarize(model.cpu(), "xnor")
    _fine_tune(binary, context, epochs=max(1, round(context.epochs * LOW_BIT_FRACTION)))
    return binary


def twn_row(model, context):
    """Ternary Weight Networks (Li et al. 2016): {−α, 0, +α} with Δ = 0.7·mean|W|, trained for
    a fifth of the baseline's epochs; 2 bits per weight."""
    ternary = ternarize(model.cpu(), "twn")
    _fine_tune(
        ternary, context, epochs=max(1, round(context.epochs * LOW_BIT_FRACTION))
    )
    return ternary


def kmeans_4bit(model, context):
    """Deep Compression's weight sharing (Han et al. 2016): 16 shared values per layer from
    linearly initialised k-means, centroids fine-tuned for a tenth of the baseline's epochs."""
    shared = quantize_kmeans(model.cpu(), bits=4)
    _fine_tune(shared, context, epochs=max(1, round(context.epochs * KMEANS_FRACTION)))
    return shared


METHODS = {
    "baseline": baseline,
    "magnitude_90": magnitude_90,
    "gradual_90": gradual_90,
    "channels_50_macs": channels_50_macs,
    "slim": slim_row,
    "ptq_int8": ptq_int8,
    "ptq_w4": ptq_w4,
    "lsq_w4a4": lsq_w4a4,
    "lsq_w2a2": lsq_w2a2,
    "int8_backend": int8_backend,
    "xnor": xnor_row,
    "twn": twn_row,
    "kmeans_4bit": kmeans_4bit,
    # distillation rows
    "student_alone": student_alone,
    "kd_student": kd_student,
}


# The batch of the second latency column: at 64 images even LeNet-5's forward pass is
# dominated by its convolutions and matrix products, not by per-call overhead.
LATENCY_BATCH = 64


def run_study(
    methods=("baseline",),
    dataset="mnist5k",
    model="lenet5",
    epochs=15,
    batch_size=64,
    lr=3e-3,
    seed=0,
    device=None,
    threads=1,
    progress=True,
    latency_rounds=5,
):
    """Train `model` on `dataset`, apply each method to a copy, and measure every result.

    Args:
        methods: names from `METHODS`, run in order; "baseline" is added first if missing.
        dataset: a name from `minicompress.data.DATASETS`.
        model: a name from `minicompress.models.MODELS`.
        epochs: baseline training epochs (Adam, one-cycle schedule, shifted-image augmentation).
        batch_size, lr, seed: training settings; the seed fixes data order and initialisation.
        device: "cpu", "cuda", "auto" or None (CPU). Latency is always measured on the CPU
            with `threads` threads.
        progress: show progress bars.
        latency_rounds: rounds of `measure.compare_latency`, an int >= 1.

    Returns:
        A list of dicts, one per method in order: "name", "accuracy", the keys of
        `measure.summary` ("latency_ms" is per forward pass of one image),
        "latency_b64_ms" (per forward pass of `LATENCY_BATCH` images), "seconds" (time
        the method took, training included), and
        "size_format": "size_bytes" is the smallest file among `measure.SIZE_FORMATS`
        (dense for a dense model, CSR or bitmask for a pruned one) and this names it;
        "size_csr_bytes" is the CSR file's size whichever is smallest. A method
        that raises `NotApplicable` has no row; a warning says which and why.
    """
    methods = list(_checks.check_names(methods, "methods"))
    for method in methods:
        _checks.check_choice(method, "methods", METHODS)
    if "baseline" not in methods:
        methods.insert(0, "baseline")
    _checks.check_choice(dataset, "dataset", data.DATASETS)
    _checks.check_choice(model, "model", models.MODELS)
    _checks.check_int(epochs, "epochs", low=1)
    _checks.check_int(batch_size, "batch_size", low=1)
    _checks.check_real(lr, "lr", low=0, low_open=True)
    _checks.check_int(seed, "seed")
    _checks.check_int(threads, "threads", low=1)
    _checks.check_bool(progress, "progress")
    latency_rounds = _checks.check_int(latency_rounds, "latency_rounds", low=1)

    device = train.resolve_device(device)
    train.seed_everything(seed)
    train_loader, test_loader = data.loaders(
        dataset, batch_size=batch_size, seed=seed, augment=True
    )
    shape = data.input_shape(dataset)
    net = build_for(model, dataset)
    example_input = torch.randn(1, *shape)
    context = StudyContext(
        train_loader, test_loader, example_input, epochs, lr, device, progress
    )

    start = time.perf_counter()
    train.fit(
        net,
        train_loader,
        epochs,
        lr=lr,
        device=device,
        progress=progress,
        schedule="onecycle",
    )
    trained_seconds = time.perf_counter() - start

    rows, skipped, compressed_models = [], {}, {}
    for name in methods:
        train.seed_everything(seed)
        start = time.perf_counter()
        try:
            compressed = METHODS[name](copy.deepcopy(net), context)
        except NotApplicable as reason:
            skipped[name] = str(reason)
            continue
        seconds = (
            time.perf_counter()
            - start
            + (trained_seconds if name == "baseline" else 0.0)
        )
        accuracy = train.evaluate(compressed, test_loader, device=device)
        compressed = compressed.cpu()
        row = {
            "name": name,
            **measure.summary(
                compressed, example_input, accuracy=accuracy, latency=False
            ),
        }
        compressed_models[name] = compressed
        # A pruned model is only smaller on disk in a sparse format: report the smallest
        # real file among the formats measure knows, and which format that was.
        sizes = {
            f: measure.size_bytes(compressed, format=f) for f in measure.SIZE_FORMATS
        }
        row["size_format"] = min(sizes, key=sizes.get)
        row["size_bytes"] = sizes[row["size_format"]]
        row["size_csr_bytes"] = sizes["csr"]
        row["seconds"] = seconds
        rows.append(row)
    # Every model timed in the same calls, interleaved: ratios between rows then hold on a
    # shared machine, where one-shot timings do not.
    for key, batch in (("latency_ms", 1), ("latency_b64_ms", LATENCY_BATCH)):
        timed = measure.compare_latency(
            compressed_models,
            torch.randn(batch, *shape),
            rounds=latency_rounds,
            threads=threads,
        )
        for row in rows:
            row[key] = timed[row["name"]]
    if skipped:
        for name, reason in skipped.items():
            warnings.warn(f"study method {name!r} skipped: {reason}", stacklevel=2)
    return rows


def build_for(model, dataset):
    """Build reference model `model` shaped for `dataset`'s images and ten classes."""
    _checks.check_choice(model, "model", models.MODELS)
    _checks.check_choice(dataset, "dataset", data.DATASETS)
    channels, height, _ = data.input_shape(dataset)
    options = {"input_size": height} if model == "lenet300" else {}
    return models.build(model, num_classes=10, in_channels=channels, **options)


def plot_study(rows, path=None, title=None):
    """Plot test accuracy against size on disk (log scale), one labelled point per method.

    Returns the matplotlib figure; also saves it as PNG when `path` is given.
    """
    import matplotlib.pyplot as plt

    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):
        raise TypeError(
            f"rows must be a list of run_study rows, got {type(rows).__name__}"
        )
    for row in rows:
        missing = [
            k
            for k in ("name", "size_bytes", "accuracy")
            if not isinstance(row, dict) or k not in row
        ]
        if missing:
            raise ValueError(f"rows must be run_study rows; a row lacks {missing}")
    _checks.check_path(path, "path")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {title!r}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        size_kib = row["size_bytes"] / 1024
        ax.scatter(size_kib, 100 * row["accuracy"], s=40)
        ax.annotate(
            row["name"],
            (size_kib, 100 * row["accuracy"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=9,
        )
    ax.set_xscale("log")
    ax.set_xlabel("size of the serialized model (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Accuracy against size: up and to the left is better")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
