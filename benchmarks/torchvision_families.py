"""Does one call prune the model families of torchvision's zoo? Counted on the full-size models.

    python benchmarks/torchvision_families.py [--amount 0.5] [--size 224] [--models a,b,...]

For each model (weights=None, eval mode, a (1, 3, size, size) input): one call of
`prune_channels(model, amount, "l1", x)` (L1 filter norms, the same amount in every group),
and, where Torch-Pruning is installed (`pip install torch-pruning`; it is not a dependency of
this package), one call of its `MetaPruner` with the L1 `GroupMagnitudeImportance`, the same
pruning ratio and the classifier left whole, its documented default use. "yes" means the call
returned a model that runs, keeps the output shape and has fewer MACs; the MAC ratio is
MACs after / MACs before, both counted by `measure.macs` (torch.utils.flop_counter). A failure
prints the first line of the error; a call that runs past --timeout seconds counts as a
failure.

Torch-Pruning, by default, also prunes the embedding dim of transformers (its attention
handling cuts the projections and heads' widths) while we keep a stream that passes through
attention whole and prune only the MLP hidden units, so their ratios differ most there.
"""

import argparse
import signal
import subprocess
import sys
import time

import torch
import torchvision

from minicompress import measure
from minicompress.pruning.structured import prune_channels

FAMILIES = {
    "resnet18": "ResNet (reference)",
    "mobilenet_v2": "MobileNetV2 (depthwise, reference)",
    "resnext50_32x4d": "ResNeXt (grouped convs)",
    "regnet_x_400mf": "RegNetX (grouped convs)",
    "regnet_y_400mf": "RegNetY (grouped convs, squeeze-excitation)",
    "efficientnet_b0": "EfficientNet (stochastic depth, squeeze-excitation)",
    "convnext_tiny": "ConvNeXt (permute + LayerNorm, layer scale)",
    "shufflenet_v2_x1_0": "ShuffleNetV2 (channel shuffle, chunk)",
    "vit_b_16": "ViT (class token, fixed reshape, MLP blocks)",
    "swin_t": "Swin (shifted windows, patch merging, MLP blocks)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=",".join(FAMILIES))
    parser.add_argument("--timeout", type=int, default=300, help="seconds per call")
    parser.add_argument(
        "--torch-pruning-only", help=argparse.SUPPRESS
    )  # one model, in a child
    args = parser.parse_args(argv)
    if args.torch_pruning_only:
        return _torch_pruning_row(args)
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    tp = _torch_pruning()
    header = "| family | model | minicompress: one call | MAC ratio | seconds |"
    rule = "|---|---|---|---|---|"
    if tp is not None:
        header += f" Torch-Pruning {tp.__version__}: one call | MAC ratio |"
        rule += "---|---|"
    print(header)
    print(rule)
    failed = 0
    for name in args.models.split(","):
        model = getattr(torchvision.models, name)(weights=None).eval()
        ours = _attempt(
            lambda: prune_channels(model, args.amount, "l1", x), model, x, args.timeout
        )
        failed += ours[0] != "yes"
        row = f"| {FAMILIES.get(name, name)} | {name} | {ours[0]} | {ours[1]} | {ours[2]} |"
        if tp is not None:
            row += f" {_torch_pruning_in_a_child(name, args)} |"
        print(row, flush=True)
    return 1 if failed else 0


def _attempt(prune, model, x, timeout):
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(timeout)  # a call that runs longer counts as not pruning the model
    try:
        pruned = prune()
        signal.alarm(0)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            same = pruned.eval()(x).shape == model(x).shape
        ratio = measure.macs(pruned, x) / measure.macs(model, x)
    except Exception as error:  # report it and go on with the next model
        signal.alarm(0)
        first = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        return f"no ({type(error).__name__}: {first})", "-", "-"
    verdict = (
        "yes" if same and ratio < 1 else f"no (output shape {same}, ratio {ratio:.3f})"
    )
    return verdict, f"{ratio:.3f}", f"{seconds:.1f}"


def _torch_pruning_in_a_child(name, args):
    # Torch-Pruning catches every exception in places (a bare except), a time limit among
    # them, so each of its calls runs in a process of its own that can be stopped.
    command = [
        sys.executable,
        __file__,
        "--torch-pruning-only",
        name,
        "--amount",
        str(args.amount),
    ]
    command += ["--size", str(args.size), "--timeout", str(args.timeout)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return f"no (did not finish in {args.timeout} s) | -"
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else f"no (exit {done.returncode}) | -"


def _torch_pruning_row(args):
    import torch_pruning as tp

    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    model = getattr(torchvision.models, args.torch_pruning_only)(weights=None).eval()
    reference = getattr(torchvision.models, args.torch_pruning_only)(
        weights=None
    ).eval()
    verdict, ratio, _ = _attempt(
        lambda: _tp_prune(tp, model, x, args.amount), reference, x, args.timeout
    )
    print(f"{verdict} | {ratio}")
    return 0


def _out_of_time(signum, frame):
    raise TimeoutError("did not finish in the time allowed (--timeout)")


def _tp_prune(tp, model, x, amount):
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=amount,
        ignored_layers=[classifier],
    )
    pruner.step()
    return model


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        return None
    return torch_pruning


if __name__ == "__main__":
    sys.exit(main())
