"""How close is digitnet to the leanest NumPy training loop? (seed-002 MLP, run by hand)

The floor is the seed-002 network (784-128-64-10 ReLU, SGD lr 0.1, batch 128) trained by the leanest
epoch plain NumPy allows: the training set pre-scaled to float32 (188 MB more than digitnet's uint8
store), every array preallocated, no metrics, no checks, no layers. digitnet's Trainer and that loop run
epoch by epoch in turn (order alternating each round, one BLAS thread for both, as digitnet picks for
this network), and the script prints the medians, the 10th percentiles and the median per-round ratio,
and writes them to benchmarks/results/numpy-floor.json.

    DIGITNET_DATA=../shared/data python benchmarks/numpy_floor.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


class LeanLoop:
    """seed-002 in straight-line NumPy: forward, softmax-cross-entropy gradient, backward, SGD."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
        f32 = np.float32
        self.x_all = images.reshape(len(images), -1).astype(f32) / f32(255)
        self.y_all = labels.astype(np.intp)
        self.rng = rng
        sizes = [784, 128, 64, 10]
        self.weights = [(rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(f32)
                        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
        self.biases = [np.zeros(n_out, f32) for n_out in sizes[1:]]
        self.grad_weights = [np.empty_like(w) for w in self.weights]
        self.batch = 128
        self.hidden = [np.empty((self.batch, n), f32) for n in sizes[1:]]
        self.grad_hidden = [np.empty((self.batch, n), f32) for n in sizes[1:-1]]
        self.x = np.empty((self.batch, 784), f32)
        self.scratch = np.empty_like(self.weights[0])
        self.lr = f32(0.1)
        self.rows = np.arange(self.batch)

    def epoch(self) -> None:
        x, batch = self.x, self.batch
        order = self.rng.permutation(len(self.x_all))
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start:start + batch]
            np.take(self.x_all, idx, axis=0, out=x)
            self.step(x, self.y_all[idx])

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        """One SGD step on the batch ``x [128, 784]`` float32, ``y [128]`` class indices."""
        (w1, w2, w3), (b1, b2, b3) = self.weights, self.biases
        (gw1, gw2, gw3), (h1, h2, z), (g1, g2) = self.grad_weights, self.hidden, self.grad_hidden
        lr, batch = self.lr, self.batch
        np.matmul(x, w1, out=h1)
        h1 += b1
        np.maximum(h1, 0, out=h1)
        np.matmul(h1, w2, out=h2)
        h2 += b2
        np.maximum(h2, 0, out=h2)
        np.matmul(h2, w3, out=z)
        z += b3
        z -= z.max(axis=1, keepdims=True)            # softmax, then (p - onehot) / B
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        z[self.rows, y] -= 1
        z /= batch
        np.matmul(h2.T, z, out=gw3)
        grad_b3 = z.sum(0)
        np.matmul(z, w3.T, out=g2)
        g2 *= h2 > 0
        np.matmul(h1.T, g2, out=gw2)
        grad_b2 = g2.sum(0)
        np.matmul(g2, w2.T, out=g1)
        g1 *= h1 > 0
        np.matmul(x.T, g1, out=gw1)
        grad_b1 = g1.sum(0)
        np.multiply(gw1, lr, out=self.scratch)
        w1 -= self.scratch
        w2 -= lr * gw2
        w3 -= lr * gw3
        b1 -= lr * grad_b1
        b2 -= lr * grad_b2
        b3 -= lr * grad_b3

def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    from digitnet.bench import CONFIGS, DigitnetRun, load_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args(argv)
    config = CONFIGS["mlp-seed-002"]
    train, test = load_data(config, quick=False)
    lean = LeanLoop(train.images, train.labels, np.random.default_rng(0))
    digitnet = DigitnetRun(config, train, test)
    times: dict[str, list[float]] = {"lean NumPy loop": [], "digitnet": []}
    with threadpool_limits(1, user_api="blas"):
        lean.epoch()                                  # warm-up: buffers, caches, BLAS
    digitnet.epoch()
    for round_index in range(args.rounds):
        names = list(times) if round_index % 2 else list(times)[::-1]
        for name in names:
            time.sleep(0.3)                           # let idle BLAS threads stop spinning
            start = time.perf_counter()
            if name == "digitnet":
                digitnet.epoch()
            else:
                with threadpool_limits(1, user_api="blas"):
                    lean.epoch()
            times[name].append(time.perf_counter() - start)
    result = {name: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)), "seconds": v}
              for name, v in times.items()}
    ratio = float(np.median(np.array(times["digitnet"]) / np.array(times["lean NumPy loop"])))
    result["digitnet / lean loop, median per round"] = ratio
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    for name in times:
        print(f"{name:16s} {result[name]['median']:.3f} s/epoch (p10 {result[name]['p10']:.3f})")
    print(f"digitnet / lean loop: {ratio:.3f} (median of per-round ratios)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "numpy-floor.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
