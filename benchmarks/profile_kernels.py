"""Where a training step's time goes, kernel by kernel, beside PyTorch's step on the same batches.

    python benchmarks/profile_kernels.py cnn cnn-5x5 --steps 40
    DIGITNET_THREADS=1 python benchmarks/profile_kernels.py mlp-seed-002 --json out.json
    python benchmarks/profile_kernels.py --compare before.json after.json     # a Markdown table

For each benchmark configuration (``digitnet.bench.CONFIGS``, plus ``cnn-fast`` with Adam and
``cnn-best``) it trains ``--steps`` batches through digitnet's Trainer with every layer's forward and
backward, the loss, the optimizer step and the batch preparation wrapped in timers, then the same
number of steps of the PyTorch twin (when torch is installed), and prints milliseconds per step per
part. The two alternate in rounds so both see the same machine. The figures in docs/SPEED.md
("Profile per kernel") come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from digitnet import bench
from digitnet.kernels import threads as kernel_threads


def _timed(table: dict[str, list[float]], name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[name].append(time.perf_counter() - start)
    return wrapper


def instrument(trainer, table: dict[str, list[float]]) -> None:
    """Wrap every layer's forward/backward (and the fused conv+pool pair), the loss and the optimizer."""
    model = trainer.model
    for index, layer in enumerate(model.layers):
        label = f"{index}:{type(layer).__name__}"
        layer.forward = _timed(table, f"{label} forward", layer.forward)
        layer.backward = _timed(table, f"{label} backward", layer.backward)
        for pair in ("forward_pooled", "backward_pooled"):
            if hasattr(layer, pair):
                setattr(layer, pair, _timed(table, f"{label}+pool {pair.split('_')[0]}", getattr(layer, pair)))
    trainer.loss_fn.forward = _timed(table, "loss forward", trainer.loss_fn.forward)
    trainer.optimizer.step = _timed(table, "optimizer step", trainer.optimizer.step)
    trainer._step = _timed(table, "whole step", trainer._step)


def digitnet_steps(config, train, steps: int, table: dict[str, list[float]]) -> float:
    """Run ``steps`` batches (after 5 warm-up batches); returns seconds per step (batch preparation included)."""
    from digitnet.training import build_trainer

    trainer = build_trainer(config, train.head((steps + 5) * config.batch_size), log=lambda message: None)
    trainer.record_grad_norms = True
    with trainer.epoch_context():
        trainer._begin_epoch()
        batches = trainer._batches()
        for _ in range(5):
            b, x, y = next(batches)
            trainer._step(x, y, b, 0.01)
        instrument(trainer, table)
        start = time.perf_counter()
        for _ in range(steps):
            b, x, y = next(batches)
            trainer._step(x, y, b, 0.01)
        return (time.perf_counter() - start) / steps


def torch_steps(bench_config, train, test, steps: int) -> float | None:
    """Seconds per step of the PyTorch twin: its second epoch over ``steps`` batches (the first warms up)."""
    try:
        run = bench.TorchRun(bench_config, train.head(steps * bench_config.batch_size), test.head(10))
    except Exception:                                       # no torch: digitnet alone
        return None
    run.epoch()
    start = time.perf_counter()
    run.epoch()
    return (time.perf_counter() - start) / steps


def config_named(name: str):
    """(TrainConfig, BenchConfig or None) for a bench configuration or a preset."""
    if name in bench.CONFIGS:
        return bench.train_config(bench.CONFIGS[name]), bench.CONFIGS[name]
    from digitnet.config import load_preset

    return load_preset(name), None


def compare_table(before: dict, after: dict) -> str:
    """Markdown: per configuration and part, ms per step before and after (two JSON files of this script)."""
    lines = ["| configuration | part | before, ms | after, ms | after / before |", "|---|---|---|---|---|"]
    for name, new in after.items():
        old = before.get(name)
        if old is None:
            continue
        rows = [("whole step", old["digitnet_ms"], new["digitnet_ms"])]
        rows += [(part, old["parts_ms"].get(part), ms) for part, ms in new["parts_ms"].items()
                 if part != "whole step" and max(ms, old["parts_ms"].get(part) or 0) >= 0.2]
        if new.get("torch_ms"):
            rows.append(("PyTorch's whole step", old.get("torch_ms"), new["torch_ms"]))
        for index, (part, was, now) in enumerate(rows):
            ratio = f"{now / was:.2f}x" if was else ""
            was_text = f"{was:.2f}" if was is not None else "–"
            lines.append(f"| {name if index == 0 else ''} | {part} | {was_text} | {now:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="bench configurations (mlp-seed-002, mlp-800, cnn, cnn-5x5, "
                                                   "cnn-fast, cnn-best)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print a Markdown table of two JSON files written by --json, and stop")
    parser.add_argument("--steps", type=int, default=40, help="timed batches per round (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of digitnet then PyTorch (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        print(compare_table(before, after))
        return 0
    train, test = bench.load_data(bench.CONFIGS["cnn"], quick=False)
    report = {}
    for name in args.configs:
        config, bench_config = config_named(name)
        table: dict[str, list[float]] = defaultdict(list)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(digitnet_steps(config, train, args.steps, table))
            if bench_config is not None:
                value = torch_steps(bench_config, train, test, args.steps)
                if value is not None:
                    theirs.append(value)
        step_ms = statistics.median(ours) * 1e3
        print(f"\n{name}: digitnet {step_ms:.1f} ms/step" +
              (f", PyTorch {statistics.median(theirs) * 1e3:.1f} ms/step "
               f"({statistics.median(ours) / statistics.median(theirs):.2f}x)" if theirs else ""))
        parts = {part: statistics.median(times) * 1e3 * len(times) / (args.steps * args.rounds)
                 for part, times in table.items()}
        for part, ms in parts.items():
            print(f"  {part:36s} {ms:8.2f} ms  {ms / step_ms:6.1%}")
        report[name] = {"digitnet_ms": step_ms, "torch_ms": statistics.median(theirs) * 1e3 if theirs else None,
                        "parts_ms": parts, "threads": getattr(kernel_threads, "thread_count", lambda: 1)(),
                        "cores": os.cpu_count()}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
