"""Train presets on full MNIST and record accuracy and time: the README's results table.

    python benchmarks/presets.py                       # every MLP preset
    python benchmarks/presets.py seed-002 mlp-fast     # some of them

Writes benchmarks/results/presets.json (merged with earlier runs) and presets.md.
Run by hand on a quiet machine; the numbers in the README come from here.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    from digitnet.config import load_preset, presets
    from digitnet.runs import run_training

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="presets to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.names or list(presets())
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "presets.json"
    table = json.loads(json_path.read_text()) if json_path.exists() else {}
    for name in names:
        config = load_preset(name).replace(seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = run_training(config, Path(tmp) / name, quiet=True, log=lambda m: None)
            wall = time.perf_counter() - started
        m = result.metrics
        table[name] = {
            "description": config.description,
            "reported_accuracy": config.reported_accuracy,
            "test_accuracy": m["test_accuracy"],
            "test_loss": m["test_loss"],
            "train_seconds": m["train_seconds"],
            "wall_seconds": wall,
            "epochs": config.epochs,
            "seed": args.seed,
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"),
        }
        print(f"{name}: {m['test_accuracy'] * 100:.2f}% in {m['train_seconds']:.1f} s training "
              f"({wall:.1f} s wall)", flush=True)
        json_path.write_text(json.dumps(table, indent=2) + "\n")
    lines = ["| preset | configuration | seed project reported | digitnet test accuracy | training time |",
             "|---|---|---|---|---|"]
    for name in presets():
        if name in table:
            row = table[name]
            lines.append(f"| `{name}` | {row['description']} | {row['reported_accuracy'] or '—'} | "
                         f"**{row['test_accuracy'] * 100:.2f}%** | {row['train_seconds']:.1f} s |")
    (RESULTS / "presets.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
