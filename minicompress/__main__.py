"""Command line: `python -m minicompress study ...` runs the trade-off study.

Trains the baseline, applies the chosen methods, prints a markdown table with ratios against
the baseline and writes `study.md`, `study.json` and `study.png` into `--out`.
"""

import argparse
import json
import os
import sys

__all__ = ["main"]


def main(argv=None):
    from . import data, models, study

    parser = argparse.ArgumentParser(
        prog="python -m minicompress", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "study",
        help="train a baseline, compress copies of it, measure and plot",
        description="Train a baseline model, apply compression methods to copies of it, and measure "
        "accuracy, parameters, nonzeros, MACs, bytes on disk and latency of each.",
    )
    p.add_argument(
        "--dataset",
        default="mnist5k",
        choices=data.DATASETS,
        help="dataset (default: mnist5k, offline)",
    )
    p.add_argument(
        "--model",
        default="lenet5",
        choices=list(models.MODELS),
        help="reference model (default: lenet5)",
    )
    p.add_argument(
        "--epochs", type=int, default=15, help="baseline training epochs (default: 15)"
    )
    p.add_argument(
        "--methods",
        default="all",
        help=f"comma-separated methods, or 'all' (default). Available: {', '.join(study.METHODS)}",
    )
    p.add_argument(
        "--out",
        default="study_out",
        help="folder for study.md, study.json, study.png (default: study_out)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="training batch size (default: 64)"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=3e-3,
        help="peak learning rate of Adam (default: 3e-3)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for data order and initialisation (default: 0)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    import matplotlib
    import torch

    matplotlib.use("Agg")  # write files; never open a window
    # Fine-tuning very sparse models with Adam produces denormal floats, which x86 CPUs
    # handle several times slower; flushing them to zero changes no result we report.
    torch.set_flush_denormal(True)
    from .measure import format_table

    methods = (
        list(study.METHODS)
        if args.methods == "all"
        else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    try:
        rows = study.run_study(
            methods,
            dataset=args.dataset,
            model=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    table = format_table(rows, baseline="baseline")
    note = (
        "Latency: CPU, one thread, every model timed together (the median of many short "
        "interleaved samples); 'latency' is one forward pass of a single image, where small models mostly "
        f"pay call overhead, 'latency, batch {study.LATENCY_BATCH}' one forward pass of "
        f"{study.LATENCY_BATCH} images, where the arithmetic dominates."
    )
    print(f"{args.model} on {args.dataset}, {args.epochs} epochs, seed {args.seed}\n")
    print(table)
    print(f"\n{note}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "study.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(rows, f, indent=2)
    study.plot_study(
        rows,
        os.path.join(args.out, "study.png"),
        title=f"{args.model} on {args.dataset}: accuracy against size",
    )
    print(f"\nwrote {os.path.join(args.out, 'study.png')}, study.md and study.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
