"""Does removing channels buy the speed its MAC count promises? Measured on one CPU thread.

    python benchmarks/structured_speedup.py [--repeats 5] [--min-run-time 0.5]

1. resnet20 (3 x 32 x 32 input, batch 32): channel pruning by L1 filter norm (Li et al. 2017)
   at 50 % of the MACs removed, two ways: the same amount in every group (found by
   `prune_channels_to_macs`), and half of the channels of stages 1 and 2 with stage 3 left
   whole (a dict amount). The check, on the second: latency speed-up >= 0.8 x the MAC ratio
   (MACs before / MACs after).
2. Every Network Slimming variant on darknet_tiny (same input), and the four channel variants
   on resnet20, at percent 0.5 (layer: 2 residual units; layer_channel: 0.5 and 2 units). The
   BatchNorm scales are a seeded random stand-in for sparsity training (speed depends on the
   shapes left, not on the values).

Why two ways: on CPUs a convolution's time per MAC is far from constant. The early stage (16
channels at full resolution) is the slowest per MAC, and oneDNN's kernels work on blocks of 8
or 16 channels, so 16 -> 12 channels saves nothing while 16 -> 8 saves most. A uniform amount
spreads the cut over fast and slow layers alike and its speed-up trails the MAC ratio; cutting
where time is spent closes the gap.

Latency is `measure.compare_latency` with one thread: every model is timed for `--repeats`
rounds of `--min-run-time` seconds, in short samples interleaved with the other models', and
the median sample counts, so that interference from other processes hits every model alike.
Prints a markdown table and exits with status 1 when the check fails.
"""

import argparse
import sys

import torch
from torch import nn

from minicompress import measure, models
from minicompress.pruning.dependency import build_dependency_graph
from minicompress.pruning.slimming import slim
from minicompress.pruning.structured import prune_channels, prune_channels_to_macs

CHECK_FACTOR = 0.8  # speed-up must reach this fraction of the MAC ratio
CHECKED = "resnet20 L1, 50 % MACs, stages 1-2 halved"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(32, 3, 32, 32)

    resnet = models.build("resnet20", in_channels=3).eval()
    darknet = models.build("darknet_tiny", in_channels=3).eval()
    for model in (resnet, darknet):
        _stand_in_scales(model)
    graph = build_dependency_graph(resnet, x[:1])
    early = {  # half of every prunable group outside stage 3
        group.sources[0]: 0.5
        for group in graph.groups
        if group.prunable and not any(s.startswith("layer3") for s in group.sources)
    }
    rows = {
        "resnet20 dense": (resnet, resnet),
        "resnet20 L1, 50 % MACs, same amount everywhere": (
            resnet,
            prune_channels_to_macs(resnet, 0.5, "l1", x[:1]),
        ),
        CHECKED: (resnet, prune_channels(resnet, early, "l1", x[:1])),
    }
    for variant in ("normal", "shortcut", "slim", "regular"):
        rows[f"resnet20 slim variant {variant}"] = (
            resnet,
            slim(resnet, 0.5, variant, x[:1]),
        )
    rows["darknet_tiny dense"] = (darknet, darknet)
    for variant, percent, units in (
        ("normal", 0.5, None),
        ("shortcut", 0.5, None),
        ("slim", 0.5, None),
        ("regular", 0.5, None),
        ("layer", 0.0, 2),
        ("layer_channel", 0.5, 2),
    ):
        pruned = slim(darknet, percent, variant, x[:1], units=units)
        rows[f"darknet_tiny slim variant {variant}"] = (darknet, pruned)

    # All models timed together, finely interleaved: a busy moment hits every model alike.
    best = measure.compare_latency(
        {name: pruned for name, (_, pruned) in rows.items()},
        x,
        rounds=args.repeats,
        threads=1,
        min_run_time=args.min_run_time,
    )

    print(
        "| model | MACs | MAC ratio | latency (ms) | speed-up | speed-up / MAC ratio |"
    )
    print("|---|---|---|---|---|---|")
    passed = True
    for name, (dense, pruned) in rows.items():
        macs = measure.macs(pruned, x[:1])
        ratio = measure.macs(dense, x[:1]) / macs
        dense_name = "resnet20 dense" if dense is resnet else "darknet_tiny dense"
        speedup = best[dense_name] / best[name]
        print(
            f"| {name} | {macs:,} | {ratio:.2f} | {best[name]:.2f} | {speedup:.2f} "
            f"| {speedup / ratio:.2f} |"
        )
        if name == CHECKED:
            check = (name, ratio, speedup)
    name, ratio, speedup = check
    passed = speedup >= CHECK_FACTOR * ratio
    print(
        f"\ncheck ({name}): speed-up {speedup:.2f} >= {CHECK_FACTOR} x MAC ratio {ratio:.2f} "
        f"= {CHECK_FACTOR * ratio:.2f}: {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


def _stand_in_scales(model):
    """Seeded random BatchNorm scales, spread like those after sparsity training."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(
                    torch.rand(module.num_features, generator=generator) ** 2
                )


if __name__ == "__main__":
    sys.exit(main())
