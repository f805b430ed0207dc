"""How many BLAS threads a training step runs on.

With the kernels, BLAS runs on **one** thread: the kernels' own workers
(:mod:`digitnet.kernels.parallel`) cut every large product in parts and run the parts on all the
cores, together with the element-wise passes between them, which BLAS threads cannot help. One
BLAS thread also keeps the numbers independent of the thread count: OpenBLAS sums some products in
a different order with two threads than with one.

The reference layers have no workers. They keep BLAS's default thread count (capped by the
``threads`` setting) for networks whose largest product is large, and one thread for small ones,
where a second BLAS thread busy-waiting between calls slows the element-wise work more than it
helps the products. The rule depends only on the network, the batch size and the thread setting,
so the same run always gets the same count and resumed runs stay bit-identical. docs/SPEED.md
("Two threads") has the measurements.
"""

from __future__ import annotations

import contextlib
import math
import os

from digitnet.kernels.parallel import resolve_threads

#: with the reference layers, a step whose largest matrix product is below this many FLOPs runs BLAS on one thread
SMALL_MATMUL_FLOPS = 50e6


def largest_matmul_flops(model, batch_size: int) -> float:
    """FLOPs of the largest matrix product in a training step: ``2 * B * weights.size * positions``
    for the layer that maximises it (positions = output pixels for a convolution, 1 for Dense)."""
    largest = 0.0
    for layer, shape in zip(model.layers, model.output_shapes(), strict=True):
        weights = layer.params.get("weights")
        if weights is not None and weights.ndim >= 2:
            positions = math.prod(shape[1:]) if len(shape) == 3 else 1
            largest = max(largest, 2.0 * batch_size * weights.size * positions)
    return largest


def blas_thread_count(model, batch_size: int, threads: int, kernels: bool = True) -> int | None:
    """The BLAS thread count of a training step, or None for BLAS's own default (see the module docstring).

    Args:
        threads: the thread setting (:func:`digitnet.kernels.parallel.resolve_threads`).
        kernels: whether the model trains with the kernels (then always 1).
    """
    if kernels or threads == 1 or largest_matmul_flops(model, batch_size) < SMALL_MATMUL_FLOPS:
        return 1
    return None if threads >= (os.cpu_count() or 1) else threads


def blas_threads_for(model, batch_size: int, threads: int | None = None) -> contextlib.AbstractContextManager:
    """A context that sets BLAS to :func:`blas_thread_count` threads while ``model`` trains.

    A model with ``workers`` (a :class:`~digitnet.kernels.FastSequential`) trains with the kernels;
    ``threads`` defaults to its workers' count, or :func:`~digitnet.kernels.parallel.resolve_threads`.

    Uses threadpoolctl when it is installed (it comes with scikit-learn); without it, or with an
    explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment, nothing changes.
    """
    workers = getattr(model, "workers", None)
    if threads is None:
        threads = workers.threads if workers is not None else resolve_threads()
    count = blas_thread_count(model, batch_size, threads, kernels=workers is not None)
    if count is None or "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(count, user_api="blas")


__all__ = ["SMALL_MATMUL_FLOPS", "blas_thread_count", "blas_threads_for", "largest_matmul_flops"]
