"""Two commits side by side: train the same benchmark network with each, alternating epoch by epoch.

    python benchmarks/ab.py --base 75f67e5 mlp-seed-002 mlp-800 cnn cnn-5x5

checks out ``--base`` in a temporary git worktree and starts one worker process per side, each
importing digitnet from its own tree (``PYTHONPATH=<tree>/src``) and driving that tree's own
``digitnet.bench.DigitnetRun`` (the network, data order and optimizer of ``digitnet bench``). The
driver asks the two workers for one epoch at a time in the order A B B A A B ..., so slow and fast
moments of a shared machine fall on both sides alike, and reports per side the median and 10th
percentile seconds per epoch, the ratio head/base, the test accuracy, and whether the weights after
the last epoch are bit-identical. Results go to ``benchmarks/results/ab-<base>.json`` and ``.md``.
Run it by hand with nothing else running on the machine; never as a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(config_name: str) -> None:
    """Serve ``epoch``, ``accuracy`` and ``hash`` requests on stdin, one JSON answer per line."""
    import numpy as np

    from digitnet import bench

    config = bench.CONFIGS[config_name]
    train, test = bench.load_data(config, quick=False)
    run = bench.DigitnetRun(config, train, test)
    print(json.dumps({"ready": True, "digitnet": bench.__file__}), flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == "epoch":
            start = time.perf_counter()
            run.epoch()
            answer = {"seconds": time.perf_counter() - start}
        elif request == "accuracy":
            answer = {"accuracy": run.test_accuracy()}
        elif request == "hash":
            digest = hashlib.sha256()
            for name, array in sorted(run.trainer.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(array).tobytes())
            answer = {"hash": digest.hexdigest()}
        else:
            break
        print(json.dumps(answer), flush=True)


class Side:
    """One worker process: a tree's digitnet training one benchmark network."""

    def __init__(self, label: str, tree: Path, config: str) -> None:
        self.label, self.seconds = label, []
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", config], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        self.ready = self.ask(None)

    def ask(self, request: str | None) -> dict:
        if request is not None:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} worker stopped (see its error above)")
        return json.loads(line)

    def epoch(self) -> None:
        self.seconds.append(self.ask("epoch")["seconds"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def compare(config: str, base_tree: Path, epochs: int) -> dict:
    sides = [Side("base", base_tree, config), Side("head", ROOT, config)]
    try:
        for epoch in range(epochs):
            for side in sides if epoch % 2 == 0 else sides[::-1]:
                side.epoch()
        result = {"config": config, "epochs": epochs}
        for side in sides:
            ordered = sorted(side.seconds)
            result[side.label] = {"seconds": side.seconds, "median": statistics.median(side.seconds),
                                  "p10": ordered[max(0, round(0.1 * (len(ordered) - 1)))],
                                  "accuracy": side.ask("accuracy")["accuracy"], "hash": side.ask("hash")["hash"],
                                  "digitnet": side.ready["digitnet"]}
    finally:
        for side in sides:
            side.close()
    result["ratio_median"] = result["head"]["median"] / result["base"]["median"]
    result["ratio_p10"] = result["head"]["p10"] / result["base"]["p10"]
    result["bit_identical"] = result["head"]["hash"] == result["base"]["hash"]
    return result


def markdown(base: str, head: str, results: list[dict]) -> str:
    lines = [f"# A/B: {head} (head) against {base} (base), alternating epochs", "",
             "| configuration | epochs | base s/epoch median (p10) | head s/epoch median (p10) "
             "| head/base median (p10) | base accuracy | head accuracy | weights bit-identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        b, h = r["base"], r["head"]
        lines.append(f"| {r['config']} | {r['epochs']} | {b['median']:.3f} ({b['p10']:.3f}) | {h['median']:.3f} "
                     f"({h['p10']:.3f}) | {r['ratio_median']:.3f}x ({r['ratio_p10']:.3f}x) | {b['accuracy']:.2%} "
                     f"| {h['accuracy']:.2%} | {'yes' if r['bit_identical'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=["mlp-seed-002", "mlp-800", "cnn", "cnn-5x5"],
                        help="benchmark configurations (those of digitnet bench)")
    parser.add_argument("--base", help="the commit to compare against (required unless --worker)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="epochs per side (default: 8 for MLPs, 3 for CNNs)")
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if not args.base:
        parser.error("--base REV is required")
    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="digitnet-ab-") as folder:
        tree = Path(folder) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), base], cwd=ROOT, check=True)
        try:
            for config in args.configs:
                epochs = args.epochs or (3 if config.startswith("cnn") else 8)
                results.append(compare(config, tree, epochs))
                r = results[-1]
                print(f"{config}: base {r['base']['median']:.3f} s, head {r['head']['median']:.3f} s per epoch "
                      f"(head/base {r['ratio_median']:.3f}x median, {r['ratio_p10']:.3f}x p10); "
                      f"bit-identical: {r['bit_identical']}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"base": base, "head": head, "date": time.strftime("%Y-%m-%d %H:%M"),
               "load_average": os.getloadavg(), "results": results}
    (out / f"ab-{base}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"ab-{base}.md").write_text(markdown(base, head, results))
    print(markdown(base, head, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
