"""``digitnet bench``: time digitnet against PyTorch (and scikit-learn) on the same networks.

The benchmark itself is :mod:`digitnet.bench`; PyTorch and scikit-learn are imported only when it
runs, and a missing one is a one-line error. ``python benchmarks/bench.py`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digitnet.cli.common import positive_int

DESCRIPTION = ("Train the same network with digitnet, PyTorch and scikit-learn in one process, epoch by epoch "
               "in turn, and time the matrix products of an epoch alone (the arithmetic lower bound). Writes "
               "<config>.json and bench.md to --out (default benchmarks/results).")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="speed and memory against PyTorch and scikit-learn (needs torch, scikit-learn)",
        description=DESCRIPTION, epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def _epilog() -> str:
    from digitnet.bench import CONFIGS, epochs_text

    return "configurations:\n" + "\n".join(f"  {name}: {c.description}, {c.optimizer_text}, batch "
                                           f"{c.batch_size}, {epochs_text(c.epochs)}" for name, c in CONFIGS.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from digitnet.bench import CONFIGS, DEFAULT_RESULTS

    parser.add_argument("configs", nargs="*", metavar="CONFIG",
                        help=f"configurations to run (default: all): {', '.join(CONFIGS)}")
    parser.add_argument("--epochs", type=positive_int, help="epochs per framework (default: per configuration)")
    parser.add_argument("--quick", action="store_true",
                        help="a small subset and 2 epochs: proves the pipeline, measures nothing")
    parser.add_argument("--out", metavar="DIR", help=f"where the JSON and Markdown go (default {DEFAULT_RESULTS})")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST files")
    parser.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn out")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads for both: DIGITNET_THREADS=N for digitnet, torch.set_num_threads(N) for "
                             "PyTorch (default: $DIGITNET_THREADS if set, else the number of cores)")
    parser.add_argument("--train-memory", metavar="PRESET",
                        help="also measure the peak memory of 'digitnet train --preset PRESET --epochs 2'")
    parser.add_argument("--only-train-memory", action="store_true", help="with --train-memory: nothing else")


def run(args, default_out: Path | None = None) -> int:
    from digitnet import bench
    from digitnet.errors import ConfigError
    from digitnet.kernels.parallel import resolve_threads

    configs = bench.configs_named(args.configs)
    threads = resolve_threads(args.threads)
    if args.only_train_memory and not args.train_memory:
        raise ConfigError("--only-train-memory needs --train-memory PRESET")
    bench.require_frameworks(sklearn=not args.no_sklearn)
    out_dir = Path(args.out) if args.out else (default_out or bench.DEFAULT_RESULTS)
    for note in (bench.openblas_warning(), bench.load_warning()):
        if note:
            print(note, file=sys.stderr)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    for config in ([] if args.only_train_memory else configs):
        result = bench.run_benchmark(config, epochs=args.epochs, quick=args.quick, data_dir=args.data_dir,
                                     sklearn=not args.no_sklearn, memory=not args.no_memory, threads=threads,
                                     log=log)
        path = bench.write_results(result, out_dir)
        print(bench.format_result(result))
        print(f"wrote {path} and {out_dir / 'bench.md'}")
    if args.train_memory:
        with bench.digitnet_threads(threads):       # the training subprocess inherits the setting
            memory = bench.measure_train_memory(args.train_memory, 1 if args.quick else 2, args.data_dir,
                                                2048 if args.quick else None)
        path = bench.write_results(memory, out_dir, name=f"train-memory-{args.train_memory}")
        print(f"digitnet train --preset {args.train_memory}: peak memory "
              f"{memory.get('peak_rss_mb', float('nan')):.0f} MB {memory.get('error', '')}".rstrip())
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None, default_out: Path | None = None) -> int:
    """``python benchmarks/bench.py``: the same as ``digitnet bench``, writing to ``default_out``."""
    parser = argparse.ArgumentParser(prog="digitnet bench", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), default_out)
