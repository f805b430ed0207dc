"""``digitnet bench``: time digitnet against PyTorch (and scikit-learn) on the same networks.

The benchmark itself is :mod:`digitnet.bench`; PyTorch and scikit-learn are imported only when it
runs, and a missing one is a one-line error.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from digitnet.bench import CONFIGS

    parser = subparsers.add_parser(
        "bench", help="speed and memory against PyTorch and scikit-learn (needs torch, scikit-learn)",
        description="Train the same network with digitnet, PyTorch and scikit-learn in one process, "
        "epoch by epoch in turn, and time the matrix products of an epoch alone (the arithmetic lower "
        "bound). Writes <config>.json and bench.md to --out (default benchmarks/results).",
        epilog="configurations:\n" + "\n".join(f"  {name}: {c.description}, {c.optimizer_text}, batch "
                                                f"{c.batch_size}, {c.epochs} epochs" for name, c in CONFIGS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from digitnet.bench import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from digitnet.bench import run_from_args

    return run_from_args(args)
