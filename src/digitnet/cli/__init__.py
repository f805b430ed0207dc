"""The ``digitnet`` command line.

Each sub-command lives in its own module ``digitnet.cli.cmd_<name>`` exposing
``register(subparsers)``, which adds an argparse parser whose default ``func`` runs the command.
Commands hold no logic of their own: they parse flags, call the library and print.

Every :class:`~digitnet.errors.DigitnetError` becomes one line on stderr and its exit code
(2 for bad input, 3 for divergence, 130 for an interrupted run); argparse's own usage errors
also exit 2. Heavy imports happen inside the commands so ``digitnet --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from digitnet import __version__
from digitnet.errors import DigitnetError

# Order here is the order in `digitnet --help`.
COMMANDS = ["train", "sweep", "evaluate", "predict", "submit", "data", "plot", "report", "explain", "serve", "bench"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitnet",
        description="A neural network written from scratch in NumPy that learns to read handwritten "
        "digits and shows every step.",
        epilog="Run 'digitnet COMMAND --help' for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"digitnet.cli.cmd_{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``digitnet`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if argv is None and len(sys.argv) <= 1 else 0
    try:
        result = args.func(args)
    except DigitnetError as exc:
        print(f"digitnet {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"digitnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)
