"""What compression is judged by: parameters, nonzeros, MACs, bytes on disk, measured latency.

    count_params(model)                 every parameter element, pruned or not
    count_nonzero(model)                nonzero elements of the weights the model computes with
    macs(model, example_input)          multiply-accumulates of one forward pass (torch.utils.flop_counter)
    size_bytes(model, format="dense")   length of the real serialized file ("dense", "csr", "bitmask",
                                        "packed": quantized weights as what they pack to)
    framing_bytes(model, format)        the part of that file that is torch.save's framing
    encode_tensor / decode_tensor       one tensor in a sparse storage format and back
    latency_ms(model, example_input)    median wall time of one forward pass (torch.utils.benchmark)
    compare_latency(models, x)          latency of several models timed together, finely interleaved
    summary(model, example_input)       all of the above in a dict
    format_table(rows, baseline=0)      several summaries as a markdown table with ratios

Every function sees a model's *effective* weights: for a parametrized layer (a pruning mask,
a fake quantizer) that is what `module.weight` returns, not the stored original. The same
numbers therefore describe a masked model and the model after `make_permanent`.
"""

import io
import logging
import math
import statistics
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from . import _checks

__all__ = [
    "effective_state_dict",
    "count_params",
    "count_nonzero",
    "macs",
    "size_bytes",
    "latency_ms",
    "compare_latency",
    "summary",
    "format_table",
    "SIZE_FORMATS",
    "packed_tensors",
    "encode_tensor",
    "decode_tensor",
    "framing_bytes",
]

# How `size_bytes` stores each tensor of two or more dimensions (see `encode_tensor`).
SIZE_FORMATS = ("dense", "csr", "bitmask", "packed")


def effective_state_dict(model):
    """The model's state as it computes: parametrized tensors replaced by their current value.

    Keys are those the model would have without parametrizations (`conv1.weight`, not
    `conv1.parametrizations.weight.original`), so a masked model and its permanent twin give
    the same keys and values.
    """
    _checks.check_module(model)
    state = {}
    for module_name, module in model.named_modules():
        if ".parametrizations." in f".{module_name}.":
            # The original tensor and the parametrizations' own state (a pruning mask, say)
            # are reported through the owning module's effective value below.
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, tensor in module.named_parameters(recurse=False):
            state[prefix + name] = tensor.detach()
        for name, tensor in module.named_buffers(recurse=False):
            if name in module._non_persistent_buffers_set:
                continue
            state[prefix + name] = tensor.detach()
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                with torch.no_grad():
                    state[prefix + name] = getattr(module, name).detach()
        if type(module).get_extra_state is not nn.Module.get_extra_state:
            # Plain numbers a module saves beside its tensors (an int8 layer's output scale and
            # zero point, say), as `state_dict` stores them.
            state[prefix + "_extra_state"] = module.get_extra_state()
    return state


def count_params(model):
    """Number of parameter elements, pruned ones included (the dense size)."""
    return sum(t.numel() for t in _parameter_tensors(model))


def count_nonzero(model):
    """Number of nonzero parameter elements of the effective weights (zeros are what pruning buys)."""
    return sum(int(torch.count_nonzero(t)) for t in _parameter_tensors(model))


def macs(model, example_input):
    """Multiply-accumulate operations of one forward pass on `example_input`.

    Counted by `torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per MAC for
    matrix products and convolutions, so MACs = FLOPs / 2. Only matmul-like ops are counted
    (BatchNorm, activations and pooling are not), as in Li et al. 2017 and the MIT labs.
    Zeros in the weights do not reduce the count: dense kernels multiply them anyway. torch's
    int8 kernels (`torch.ao.quantization`'s converted modules, `quantization.to_backend`) are
    counted too, as output elements x fan-in of the prepacked weight, the same MACs as the
    float layer they replace.
    """
    _checks.check_module(model)
    counter = FlopCounterMode(display=False, custom_mapping=_int8_formulas())
    with counter:
        _forward(model, example_input)
    return counter.get_total_flops() // 2


# torch.ops.quantized kernels that multiply by a prepacked weight; FlopCounterMode has no
# formula for them, so without these an int8 model would count 0 MACs.
_INT8_KERNELS = (
    "linear", "linear_relu", "linear_dynamic", "linear_relu_dynamic",
    "linear_with_input_q_dq_qweight_dq_output_fp32", "conv2d", "conv2d_relu",
)


def _int8_flops(*args, out_shape, **kwargs):
    """FLOPs (2 per MAC) of an int8 kernel: each output element sums fan-in products, the
    fan-in being the prepacked weight's shape after its first (output) dimension."""
    packed = next(a for a in args if isinstance(a, torch.ScriptObject))
    weight = packed.unpack()[0]
    return 2 * math.prod(out_shape) * math.prod(weight.shape[1:])


def _int8_formulas():
    return {
        getattr(torch.ops.quantized, name): _int8_flops
        for name in _INT8_KERNELS
        if hasattr(torch.ops.quantized, name)
    }


def size_bytes(model, format="dense"):
    """Length in bytes of the model's effective state serialized with `torch.save`.

    Args:
        format: how each tensor of two or more dimensions (the weights) is stored; 1-D
            tensors (biases, BatchNorm statistics) and scalars are always dense.
            "dense": every element, zeros included (4 bytes per float32 element).
            "csr": the weight reshaped to (rows, cols) = (shape[0], rest) in compressed
            sparse rows: nonzero values + int32 column indices + int32 row pointers,
            4·nnz + 4·nnz + 4·(rows + 1) bytes for float32. Each kept value costs 8 bytes,
            so CSR is smaller than dense only below about 50 % density.
            "bitmask": one bit per element saying zero or not (packed 8 to a byte) + the
            nonzero values, ceil(numel / 8) + 4·nnz bytes: smaller than dense below
            31/32 density and smaller than CSR above about 1/32.
            "packed": every parametrized tensor whose last parametrization can pack itself
            (has `pack`, see `minicompress.quantization.packing`) is stored as what it packs
            to, e.g. b-bit integer codes bit-packed + scale + zero point for a fake-quantized
            weight, ceil(numel·b / 8) bytes + the qparams; every other tensor dense.
            Each format adds `torch.save`'s own framing, a few hundred bytes per tensor.
    """
    _checks.check_module(model)
    _checks.check_choice(format, "format", SIZE_FORMATS)
    state = effective_state_dict(model)
    if format == "packed":
        state.update(packed_tensors(model))
        format = "dense"  # what does not pack is stored dense
    buffer = io.BytesIO()
    torch.save(
        {
            k: v if isinstance(v, dict) else encode_tensor(v.cpu().contiguous(), format)
            for k, v in state.items()
        },
        buffer,
    )
    return buffer.getbuffer().nbytes


def framing_bytes(model, format="dense"):
    """The bytes of `size_bytes(model, format)` that hold no tensor element: torch.save's zip
    container (about 1.3 kB), one record per tensor (about 250 bytes of headers and pickled
    metadata), the pickled keys and plain values.

    Measured by saving the same structure with every tensor emptied, so
    size_bytes − framing_bytes is what the elements take, plus up to 63 bytes of alignment
    per tensor. On a small model this framing is a large share of a low-bit file (LeNet-5 at
    2 bits per weight: about 4 kB beside 16 kB of codes).

    Example:
        >>> from minicompress import models
        >>> net = models.build("lenet5")
        >>> size_bytes(net) - framing_bytes(net) - 4 * count_params(net) < 64 * 10
        True
    """
    _checks.check_module(model)
    _checks.check_choice(format, "format", SIZE_FORMATS)
    state = effective_state_dict(model)
    if format == "packed":
        state.update(packed_tensors(model))
        format = "dense"
    encoded = {
        k: v if isinstance(v, dict) else encode_tensor(v.cpu().contiguous(), format)
        for k, v in state.items()
    }
    buffer = io.BytesIO()
    torch.save(_without_elements(encoded), buffer)
    return buffer.getbuffer().nbytes


def _without_elements(value):
    # The same structure with every tensor replaced by an empty one of its dtype.
    if isinstance(value, torch.Tensor):
        return value.new_empty(0)
    if isinstance(value, dict):
        return {k: _without_elements(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_without_elements(v) for v in value)
    return value


def packed_tensors(model):
    """{name: packed dict} of the parametrized tensors whose last parametrization has `pack`.

    The packer receives what the parametrizations before it return (the stored weight under a
    pruning mask, say), as in the forward pass; names are those of `effective_state_dict`.
    """
    _checks.check_module(model)
    packed = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, chain in module.parametrizations.items():
            packer = getattr(chain[-1], "pack", None)
            if not callable(packer):
                continue
            with torch.no_grad():
                value = chain.original
                for parametrization in list(chain)[:-1]:
                    value = parametrization(value)
                packed[prefix + name] = packer(value)
    return packed


def encode_tensor(tensor, format):
    """`tensor` in storage format `format` (see `size_bytes`): what `size_bytes` serializes.

    "dense" and tensors of fewer than two dimensions come back unchanged. "csr" gives a
    dict of "values", "col_indices" and "crow_indices" (int32) of the tensor reshaped to
    (shape[0], -1), built by `torch.Tensor.to_sparse_csr`; "bitmask" gives "bits" (uint8,
    `numpy.packbits` of `tensor != 0` in row-major order) and "values". Both also carry
    "format" and "shape". `decode_tensor` inverts it exactly.
    """
    _checks.check_tensor(tensor, "tensor")
    _checks.check_choice(format, "format", SIZE_FORMATS)
    if format == "dense" or tensor.dim() < 2:
        return tensor
    if tensor.numel() >= 2**31:
        raise ValueError(
            f"a tensor of {tensor.numel():,} elements does not fit int32 indices"
        )
    tensor = tensor.detach().cpu()
    if format == "csr":
        with warnings.catch_warnings():  # torch flags its sparse CSR support as beta
            warnings.simplefilter("ignore", UserWarning)
            matrix = tensor.reshape(tensor.shape[0], -1).to_sparse_csr()  # (rows, cols)
        return {
            "format": "csr",
            "shape": tuple(tensor.shape),
            "values": matrix.values(),
            "col_indices": matrix.col_indices().to(torch.int32),
            "crow_indices": matrix.crow_indices().to(torch.int32),
        }
    nonzero = (tensor != 0).flatten()
    return {
        "format": "bitmask",
        "shape": tuple(tensor.shape),
        "bits": torch.from_numpy(np.packbits(nonzero.numpy())),
        "values": tensor.flatten()[nonzero],
    }


def decode_tensor(encoded):
    """The dense tensor that `encode_tensor` encoded."""
    if isinstance(encoded, torch.Tensor):
        return encoded
    if not isinstance(encoded, dict) or encoded.get("format") not in ("csr", "bitmask"):
        raise TypeError(
            f"encoded must be a tensor or a dict from encode_tensor, got {type(encoded).__name__}"
        )
    shape = encoded["shape"]
    values = encoded["values"]
    if encoded["format"] == "csr":
        rows = shape[0]
        matrix = torch.sparse_csr_tensor(
            encoded["crow_indices"].long(),
            encoded["col_indices"].long(),
            values,
            size=(rows, math.prod(shape) // rows if rows else 0),
            check_invariants=True,
        )
        return matrix.to_dense().reshape(shape)
    numel = math.prod(shape)
    bits = np.unpackbits(encoded["bits"].numpy(), count=numel).astype(bool)
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[torch.from_numpy(bits)] = values
    return dense.reshape(shape)


def latency_ms(model, example_input, threads=1, min_run_time=0.2):
    """Median wall time of one forward pass in milliseconds, measured by `torch.utils.benchmark`.

    The model runs in eval mode under `torch.no_grad()` with `threads` intra-op threads;
    `Timer.blocked_autorange` repeats it for at least `min_run_time` seconds after warm-up.
    The mode the model was in is restored afterwards. To compare models, use
    `compare_latency`, which times them interleaved: one timing of one model on a shared
    machine is mostly noise.
    """
    threads = _checks.check_int(threads, "threads", low=1)
    min_run_time = _checks.check_real(min_run_time, "min_run_time", low=0, low_open=True)
    if isinstance(model, nn.Module):
        _forward(model, example_input)  # warm-up, and a clear error on a shape mismatch
    else:
        _checks.check_callable(model, "model")
    return _median_ms(model, example_input, threads, min_run_time)


def compare_latency(models, example_input, rounds=5, threads=1, min_run_time=0.1):
    """Latency of each model in milliseconds, the models timed together, finely interleaved.

    Each model gets `rounds` · `min_run_time` seconds of timing, cut into short samples
    (`_SLICES` per round) that are interleaved: a sample of model a, one of model b, ..., then
    a again. Each model's result is the median of its samples (the mean time of a call within
    each). On a shared machine a core runs at full speed only some of the time, in stretches of
    a fraction of a second; since every model's samples are spread over the same stretch of
    time, each sees the same mixture of fast and slow moments, and the ratios between the
    results hold where one-shot timings, or the best of a few long ones, do not: timed as
    the best of five interleaved rounds, three copies of one network came out up to four times
    apart on a busy two-core machine, as the median of interleaved short samples within a few
    percent. On a quiet machine the result is simply the typical time of a call.

    Args:
        models: dict {name: model}; a model is an `nn.Module` (timed in eval mode under
            `torch.no_grad()`) or any callable `f(x)`, such as an onnxruntime session wrapper.
        example_input: the input every model gets, or a dict {name: input} with one per model.
        rounds: an int >= 1; each model is timed for rounds · min_run_time seconds in all,
            in rounds · `_SLICES` samples (more rounds: a steadier median).
        threads: intra-op threads, an int >= 1.
        min_run_time: seconds of timing per model and round, a number > 0.

    Returns:
        dict {name: milliseconds}, in the order of `models`.

    Example:
        >>> import torch; from minicompress import measure, models
        >>> nets = {"lenet5": models.build("lenet5"), "lenet300": models.build("lenet300")}
        >>> ms = measure.compare_latency(nets, torch.zeros(8, 1, 28, 28), rounds=2)
        >>> sorted(ms) == ["lenet300", "lenet5"] and all(t > 0 for t in ms.values())
        True
    """
    if not isinstance(models, dict) or not models:
        raise TypeError(f"models must be a non-empty dict {{name: model}}, got {models!r:.80}")
    rounds = _checks.check_int(rounds, "rounds", low=1)
    threads = _checks.check_int(threads, "threads", low=1)
    min_run_time = _checks.check_real(min_run_time, "min_run_time", low=0, low_open=True)
    if isinstance(example_input, dict):
        missing = [name for name in models if name not in example_input]
        if missing:
            raise ValueError(f"example_input has no input for the models {missing}")
        inputs = example_input
    else:
        inputs = dict.fromkeys(models, example_input)
    for name, model in models.items():  # every model runs once before any is timed
        if isinstance(model, nn.Module):
            _forward(model, inputs[name])
        else:
            _checks.check_callable(model, f"models[{name!r}]")
    benchmark = _import_benchmark()
    timers = {
        name: benchmark.Timer(
            stmt="model(x)",
            globals={"model": model, "x": inputs[name]},
            num_threads=threads,
        )
        for name, model in models.items()
    }
    modes = {
        name: model.training
        for name, model in models.items()
        if isinstance(model, nn.Module)
    }
    samples = {name: [] for name in models}
    try:
        for name in modes:
            models[name].eval()
        with torch.no_grad():
            # Calls per sample, so that one sample lasts about min_run_time / _SLICES.
            number = {
                name: _calls_per(timer, min_run_time / _SLICES)
                for name, timer in timers.items()
            }
            for _ in range(rounds * _SLICES):
                for name, timer in timers.items():
                    seconds = timer.timeit(number[name]).mean  # per call
                    samples[name].append(seconds * 1e3)
    finally:
        for name, training in modes.items():
            models[name].train(training)
    return {name: statistics.median(values) for name, values in samples.items()}


def summary(model, example_input, threads=1, accuracy=None, latency=True):
    """The model's measurements in one dict.

    Keys: "params", "nonzeros", "sparsity" (fraction of parameter elements that are zero),
    "macs", "size_bytes", "latency_ms" (unless `latency=False`, for a caller that times
    several models together with `compare_latency`), and "accuracy" when given.
    """
    if accuracy is not None:
        _checks.check_real(accuracy, "accuracy", low=0, high=1)
    latency = _checks.check_bool(latency, "latency")
    params = count_params(model)
    nonzeros = count_nonzero(model)
    row = {
        "params": params,
        "nonzeros": nonzeros,
        "sparsity": 1 - nonzeros / params if params else 0.0,
        "macs": macs(model, example_input),
        "size_bytes": size_bytes(model),
    }
    if latency:
        row["latency_ms"] = latency_ms(model, example_input, threads=threads)
    if accuracy is not None:
        row["accuracy"] = accuracy
    return row


# Columns of `format_table`: key, header, how a value prints, whether a ratio baseline/value is shown.
_COLUMNS = (
    ("accuracy", "accuracy", lambda v: f"{100 * v:.2f} %", False),
    ("params", "params", lambda v: f"{v:,}", True),
    ("nonzeros", "nonzeros", lambda v: f"{v:,}", True),
    ("macs", "MACs", lambda v: f"{v:,}", True),
    ("size_bytes", "size", lambda v: _human_bytes(v), True),
    ("latency_ms", "latency", lambda v: f"{v:.3f} ms", True),
    ("latency_b64_ms", "latency, batch 64", lambda v: f"{v:.3f} ms", True),
)


def format_table(rows, baseline=0):
    """Render summaries as a markdown table, with "x N" ratios against the baseline row.

    Args:
        rows: a dict {name: summary} or a list of summaries that carry a "name" key.
        baseline: name or index of the row the ratios are taken against (baseline / row, so
            "x 4.0" under size means four times smaller), or None for no ratios.

    Columns appear only when every row has that key.
    """
    if isinstance(rows, (str, bytes)) or not isinstance(rows, (dict, list, tuple)):
        raise TypeError(f"rows must be a dict of summaries or a list of them, got {type(rows).__name__}")
    if isinstance(rows, dict):
        rows = [{"name": name, **row} for name, row in rows.items()]
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to tabulate")
    names = [str(row.get("name", i)) for i, row in enumerate(rows)]
    if baseline is None:
        base = None
    elif isinstance(baseline, int) and not isinstance(baseline, bool):
        if not -len(rows) <= baseline < len(rows):
            raise ValueError(
                f"baseline index {baseline} is out of range for {len(rows)} rows"
            )
        base = rows[baseline]
    elif baseline in names:
        base = rows[names.index(baseline)]
    else:
        raise ValueError(
            f"baseline {baseline!r} is neither a row index nor one of the names {names}"
        )
    columns = [c for c in _COLUMNS if all(c[0] in row for row in rows)]
    header = ["method"] + [title for _, title, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in zip(names, rows):
        cells = [name]
        for key, _, show, ratio in columns:
            cell = show(row[key])
            if key == "size_bytes" and row.get("size_format", "dense") != "dense":
                cell += f" {row['size_format']}"
            if ratio and base is not None and row[key]:
                cell += f" (x {base[key] / row[key]:.2f})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _parameter_tensors(model):
    # Effective values of every parameter, parametrized ones included, buffers excluded.
    _checks.check_module(model)
    names = set(_parameter_names(model))
    state = effective_state_dict(model)
    return [state[name] for name in names]


def _parameter_names(model):
    for module_name, module in model.named_modules():
        # A parametrization's own parameters (a k-means codebook, a learned scale) are part
        # of the tensor it produces, which is counted once below under the owner's name.
        if ".parametrizations." in f".{module_name}.":
            continue
        prefix = f"{module_name}." if module_name else ""
        for name, _ in module.named_parameters(recurse=False):
            yield prefix + name
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                yield prefix + name


def _forward(model, example_input):
    """Run one eval-mode forward pass, turning a shape mismatch into a clear ValueError."""
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"example_input must be a tensor, got {type(example_input).__name__}"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(example_input)
    except RuntimeError as error:
        expected = _expected_input(model)
        raise ValueError(
            f"example_input of shape {tuple(example_input.shape)} does not fit the model"
            + (f", whose first layer {expected}" if expected else "")
            + f": {error}"
        ) from error
    finally:
        model.train(was_training)


def _expected_input(model):
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"{name!r} ({type(module).__name__}) expects {module.in_channels} input channels, shape (B, {module.in_channels}, H, W)"
        if isinstance(module, nn.Linear):
            return f"{name!r} (Linear) expects {module.in_features} input features, shape (B, {module.in_features})"
    return None


# Samples per model and round in `compare_latency`: ten of a hundredth of a second each at the
# default min_run_time, short enough to fit the moments a shared core runs at full speed.
_SLICES = 10


def _calls_per(timer, seconds):
    """How many calls of `timer`'s statement take about `seconds` (at least one)."""
    once = min(timer.timeit(1).mean for _ in range(3))
    return max(1, round(seconds / once)) if once > 0 else 1


def _median_ms(model, example_input, threads, min_run_time):
    """One `blocked_autorange` median in ms; an `nn.Module` runs in eval mode, no_grad."""
    benchmark = _import_benchmark()
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else None
    if is_module:
        model.eval()
    try:
        with torch.no_grad():
            timer = benchmark.Timer(
                stmt="model(x)",
                globals={"model": model, "x": example_input},
                num_threads=threads,
            )
            measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        if is_module:
            model.train(was_training)
    return measurement.median * 1e3


def _import_benchmark():
    # torch.utils.benchmark imports cpp_extension, which logs a warning on CUDA builds of
    # torch running without a GPU; it concerns compiling extensions, not timing, so hide it.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
