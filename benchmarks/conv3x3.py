"""3x3 stride-1 convolutions: FastConv2D's im2col and Fourier algorithms against Winograd F(2x2) and F(4x4).

    python benchmarks/conv3x3.py                       # every shape, BLAS at 1 and 2 threads
    python benchmarks/conv3x3.py --rounds 5 --threads 1

Each contestant times one training step of a layer: ``forward(x, training=True)`` then ``backward``,
with the input gradient for every layer but the first (1 input channel, as in a model whose first
layer it is). The contestants take turns in rounds whose order rotates (A B C D, B C D A, ...), so a
change in the machine's load falls on all of them; the table gives the median per contestant.
Before timing, every contestant's output and gradients are checked against im2col's. In the
1-BLAS-thread rounds a fifth contestant runs Winograd F(4x4)'s batch parts in a digitnet Workers
pool of 2 threads (see WORKER_THREADS).

The shapes are the 3x3 CNN's (B = 128: 1 -> 32 on 28x28 and 32 -> 64 on 14x14, padding 1) and
neighbours (32 -> 32 on 28x28, 64 -> 64 on 7x7), each also with B = 16. The machine is shared, so
the load average is recorded before and after. Writes benchmarks/results/conv3x3.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from digitnet.kernels.conv import FastConv2D
from digitnet.kernels.parallel import Workers
from digitnet.kernels.winograd import WinogradPlan
from digitnet.nn.conv import Conv2D

RESULTS = Path(__file__).resolve().parent / "results"
ALGORITHMS = ("im2col", "fourier", "winograd-2", "winograd-4", "winograd-4-workers")
#: "winograd-4-workers" runs the plan's batch parts in a Workers pool of WORKER_THREADS threads with BLAS
#: on one thread, as digitnet.kernels.parallel prescribes. It is timed in the 1-BLAS-thread rounds only:
#: beside contestants that run BLAS on 2 threads, OpenBLAS's second thread busy-waits after their
#: products and takes the core the workers need. It uses 2 cores, so it is left out of the winner.
WORKER_THREADS = 2
#: (name, batch, C_in, C_out, size, padding); the first layer (C_in = 1) computes no input gradient
SHAPES = [
    ("conv1 1->32 28x28", 128, 1, 32, 28, 1),
    ("conv2 32->64 14x14", 128, 32, 64, 14, 1),
    ("32->32 28x28", 128, 32, 32, 28, 1),
    ("64->64 7x7", 128, 64, 64, 7, 1),
    ("conv1 1->32 28x28", 16, 1, 32, 28, 1),
    ("conv2 32->64 14x14", 16, 32, 64, 14, 1),
    ("32->32 28x28", 16, 32, 32, 28, 1),
    ("64->64 7x7", 16, 64, 64, 7, 1),
]


class WinogradLayer:
    """A training step through :class:`WinogradPlan`, with buffers reused like FastConv2D's."""

    def __init__(self, layer: Conv2D, tile: int, height: int, width: int, workers: Workers | None = None) -> None:
        self.layer = layer
        self.workers = workers
        self.plan = WinogradPlan(height, width, layer.padding, np.float32, tile=tile)
        self.compute_input_grad = True
        self.grads = {name: np.empty_like(value) for name, value in layer.params.items()}
        self._work: dict[str, np.ndarray] = {}
        self._cache: dict | None = None

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        array = self._work.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._work[name] = np.empty(shape, dtype)
        return array

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        y = self.buffer("y", (len(x), self.layer.out_channels, self.plan.out_h, self.plan.out_w), np.float32)
        params = self.layer.params
        self._cache = self.plan.forward(x, params["weights"], params["bias"], y, self.buffer, "", self.workers)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        grad_in = self.buffer("grad_in", self._cache["x_shape"], np.float32) if self.compute_input_grad else None
        self.plan.backward(grad_out, self._cache, self.layer.params["weights"], self.grads["weights"],
                           self.grads["bias"], grad_in, self.buffer, "", self.workers)
        return grad_in


def contestant(algorithm: str, reference: Conv2D, size: int, workers: Workers):
    """The layer object that trains ``reference``'s parameters by ``algorithm``."""
    if algorithm.startswith("winograd"):
        return WinogradLayer(reference, int(algorithm.split("-")[1]), size, size,
                             workers if algorithm.endswith("workers") else None)
    reference.algorithm = algorithm          # read by FastConv2D.algorithm_for
    fast = FastConv2D.adopt(reference)
    return fast


def step(layer, x: np.ndarray, grad_out: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        layer.forward(x, training=True)
        layer.backward(grad_out)

    def run_with_workers() -> None:
        with threadpool_limits(limits=1, user_api="blas"):          # the workers are the parallelism
            run()

    return run if getattr(layer, "workers", None) is None else run_with_workers


def check_agreement(layers: dict, x: np.ndarray, grad_out: np.ndarray) -> dict[str, float]:
    """Largest difference of y, dL/dweights and dL/dx from im2col's, relative to im2col's largest value."""
    def outputs(layer):
        y = layer.forward(x, training=True).copy()
        grad_in = layer.backward(grad_out)
        return [y, layer.grads["weights"].copy()] + ([grad_in.copy()] if grad_in is not None else [])

    expected = outputs(layers["im2col"])
    errors = {}
    for name, layer in layers.items():
        errors[name] = max(float(np.max(np.abs(a - e)) / np.max(np.abs(e))) for a, e in zip(outputs(layer), expected,
                                                                                          strict=True))
        if errors[name] > 1e-4:
            raise AssertionError(f"{name} disagrees with im2col: {errors[name]:.2e}")
    return errors


def measure(shape, threads: int, rounds: int, rng: np.random.Generator, workers: Workers) -> dict:
    name, batch, c_in, c_out, size, padding = shape
    reference = Conv2D(c_in, c_out, 3, padding=padding, rng=rng)
    reference.params["bias"][...] = rng.standard_normal(c_out).astype(np.float32)
    algorithms = [a for a in ALGORITHMS if threads == 1 or not a.endswith("workers")]
    layers = {algorithm: contestant(algorithm, reference, size, workers) for algorithm in algorithms}
    input_grad = c_in > 1
    for layer in layers.values():
        layer.compute_input_grad = input_grad
    x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
    grad_out = rng.standard_normal((batch, c_out, size + 2 * padding - 2, size + 2 * padding - 2)).astype(np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        errors = check_agreement(layers, x, grad_out)
        runs = {algorithm: step(layer, x, grad_out) for algorithm, layer in layers.items()}
        for run in runs.values():                      # warm-up: buffers allocated, caches filled
            run()
        times: dict[str, list[float]] = {algorithm: [] for algorithm in algorithms}
        for index in range(rounds):
            shift = index % len(algorithms)
            for algorithm in algorithms[shift:] + algorithms[:shift]:
                start = time.perf_counter()
                runs[algorithm]()
                times[algorithm].append((time.perf_counter() - start) * 1e3)
    medians = {algorithm: statistics.median(values) for algorithm, values in times.items()}
    return {"shape": name, "batch": batch, "c_in": c_in, "c_out": c_out, "size": size, "padding": padding,
            "input_grad": input_grad, "threads": threads, "median_ms": medians, "times_ms": times,
            "max_relative_difference_from_im2col": errors,
            "load_average_after": [round(value, 2) for value in os.getloadavg()]}


def markdown(report: dict) -> str:
    lines = ["# 3x3 stride-1 convolution: one training step (forward + backward), median ms", "",
             f"Measured {report['date']} on {report['machine']} (NumPy {report['numpy']}, BLAS "
             f"{report['blas']}), {report['rounds']} rounds per shape, contestants in rotating order. "
             "The machine was shared: load average (1, 5, 15 min) "
             f"{report['load_average_start']} at the start, {report['load_average_end']} at the end.", "",
             "dL/dx is computed for every layer but the first (C_in = 1). Winner: the fastest median; "
             "margin: the runner-up's median over the winner's; load after: the 1-minute load average when "
             "the row was done (this script alone adds about 1 at one thread, 2 at two). "
             f"winograd-4-workers (1-thread table only, not in the winner): the plan's batch parts in a digitnet "
             f"Workers pool of {WORKER_THREADS} threads, BLAS on one thread, so it uses {WORKER_THREADS} cores.", ""]
    for threads in report["threads"]:
        lines += [f"## BLAS at {threads} thread{'s' if threads > 1 else ''}", "",
                  "| shape | B | " + " | ".join(ALGORITHMS) + " | winner | margin | load after |",
                  "|---|---|" + "---|" * len(ALGORITHMS) + "---|---|---|"]
        for row in report["results"]:
            if row["threads"] != threads:
                continue
            ranked = sorted([item for item in row["median_ms"].items() if not item[0].endswith("workers")],
                            key=lambda item: item[1])
            cells = " | ".join(f"{row['median_ms'][algorithm]:.1f}" if algorithm in row["median_ms"] else "-"
                               for algorithm in ALGORITHMS)
            lines.append(f"| {row['shape']} | {row['batch']} | {cells} | {ranked[0][0]} | "
                         f"{ranked[1][1] / ranked[0][1]:.2f}x | {row['load_average_after'][0]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per shape and thread count (default 9)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts (default 1 2)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="only these batch sizes")
    parser.add_argument("--out", type=Path, default=RESULTS / "conv3x3", help="results path without suffix")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    blas = ", ".join(f"{info['internal_api']} {info.get('version')}" for info in threadpool_info()
                     if info["user_api"] == "blas")
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "numpy": np.__version__, "blas": blas, "rounds": args.rounds,
              "threads": args.threads, "load_average_start": [round(v, 2) for v in os.getloadavg()], "results": []}
    workers = Workers(WORKER_THREADS)
    for threads in args.threads:
        for shape in SHAPES:
            if args.batch and shape[1] not in args.batch:
                continue
            row = measure(shape, threads, args.rounds, rng, workers)
            report["results"].append(row)
            best = min((a for a in row["median_ms"] if not a.endswith("workers")), key=row["median_ms"].get)
            print(f"{threads} thr  B={row['batch']:<4} {row['shape']:<20} " +
                  "  ".join(f"{a} {m:7.1f}" for a, m in row["median_ms"].items()) +
                  f"   best {best}  load {row['load_average_after'][0]:.2f}", flush=True)
    workers.close()
    report["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
