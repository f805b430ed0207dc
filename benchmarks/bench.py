"""Speed and memory: digitnet against PyTorch and scikit-learn on the same networks.

    python benchmarks/bench.py                      # every configuration -> benchmarks/results/
    python benchmarks/bench.py mlp-seed-002 --epochs 10
    python benchmarks/bench.py cnn-fast --threads 2 # both frameworks on 2 threads
    python benchmarks/bench.py --quick --out /tmp/b # proves the pipeline works (tests run this)

The same as ``digitnet bench``; the code lives in :mod:`digitnet.bench` (its flags in
:mod:`digitnet.cli.cmd_bench`) so the installed command has it too. Writes
benchmarks/results/<config>.json and benchmarks/results/bench.md (the README's table). Run on a
quiet machine: the figures are medians of epochs run in turn (see docs/SPEED.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from digitnet.cli.cmd_bench import main
from digitnet.errors import DigitnetError

if __name__ == "__main__":
    try:
        sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
    except DigitnetError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
