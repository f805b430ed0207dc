"""Who runs the matrix products on the cores: BLAS's own threads, or the kernels' workers.

A training step has two kinds of work: matrix products, and memory-bound passes between them
(activations, pooling, copies, normalisation, updates) that BLAS threads cannot help. With the
kernels:

- **Networks with convolutions, pooling or normalisation** (memory-bound between the products):
  BLAS runs on **one** thread and the kernels' workers (:mod:`digitnet.kernels.parallel`) cut the
  large products in parts and run them, like everything else, on every core.
- **Networks of Dense layers** with a product of at least ``DENSE_BLAS_FLOPS`` (the seed-002
  network's first layer at batch 128, 26 MFLOP, and larger): BLAS's own threads run the products (a
  BLAS thread pool wakes faster than Python threads for a handful of products per step), and the
  workers stay off: BLAS's threads busy-wait on the other cores between calls, and the few large
  passes of an MLP (its optimizer update) ran no faster on the workers beside them.
- **Smaller networks of Dense layers**: one BLAS thread, nothing split; a second thread busy-waiting
  between calls would slow the element-wise work more than it helps such small products.

The choice depends on the network and the batch size only, never on the ``threads`` setting, so a
run gives the same weights on any number of worker threads (BLAS's thread count can change the last
bits of a product; OPENBLAS_NUM_THREADS in the environment overrides the rule). The reference layers
have no workers: BLAS runs their large products on ``threads`` threads. docs/SPEED.md ("Two
threads") has the measurements.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

from digitnet.kernels.denormals import flushing
from digitnet.kernels.parallel import resolve_threads

#: with the reference layers, a step whose largest matrix product is below this many FLOPs runs BLAS on one thread
SMALL_MATMUL_FLOPS = 50e6
#: with the kernels, a network of Dense layers whose largest product has at least this many FLOPs runs
#: its products on BLAS's threads (seed-002 on two cores of an AMD EPYC: 0.77x the epoch of one BLAS
#: thread; on an Intel Xeon no faster and no slower; docs/SPEED.md)
DENSE_BLAS_FLOPS = 20e6


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


def blas_runs_products(model, batch_size: int) -> bool:
    """Whether BLAS's own threads run the products of a step with the kernels: a network of Dense
    layers (and layers without parameters) whose largest product has at least DENSE_BLAS_FLOPS."""
    from digitnet.nn.dense import Dense

    dense_only = all(isinstance(layer, Dense) or not layer.params for layer in model.layers)
    return dense_only and largest_matmul_flops(model, batch_size) >= DENSE_BLAS_FLOPS


def blas_thread_count(model, batch_size: int, threads: int, kernels: bool = True) -> int | None:
    """The BLAS thread count of a training step, or None for BLAS's own default (see the module docstring).

    Args:
        threads: the thread setting (:func:`digitnet.kernels.parallel.resolve_threads`); it caps
            BLAS's threads only for the reference layers.
        kernels: whether the model trains with the kernels.
    """
    if kernels:
        return None if blas_runs_products(model, batch_size) else 1
    if threads == 1 or largest_matmul_flops(model, batch_size) < SMALL_MATMUL_FLOPS:
        return 1
    return None if threads >= (os.cpu_count() or 1) else threads


def blas_threads_for(model, batch_size: int, threads: int | None = None) -> contextlib.AbstractContextManager:
    """A context that sets BLAS to :func:`blas_thread_count` threads while ``model`` trains.

    A model with ``workers`` (a :class:`~digitnet.kernels.FastSequential`) trains with the kernels;
    inside the context its workers are on exactly when BLAS runs on one thread, and afterwards they
    are as before (off for prediction, where BLAS keeps its own threads). ``threads`` defaults to the
    workers' count, or :func:`~digitnet.kernels.parallel.resolve_threads`.

    Uses threadpoolctl when it is installed (it comes with scikit-learn); without it, or with an
    explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment, BLAS keeps its thread count
    (and the workers stay off unless that count is 1).
    """
    workers = getattr(model, "workers", None)
    if threads is None:
        threads = workers.threads if workers is not None else resolve_threads()
    count = blas_thread_count(model, batch_size, threads, kernels=workers is not None)
    fixed = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    limits: contextlib.AbstractContextManager = contextlib.nullcontext()
    one_thread = fixed == "1"
    if count is not None and not fixed:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            limits, one_thread = threadpool_limits(count, user_api="blas"), count == 1
    if workers is None:
        return limits
    return _workers_on(workers, one_thread, limits)     # never BLAS threads beside the workers' parts


@contextlib.contextmanager
def training_context(model, batch_size: int, threads: int | None = None) -> Iterator[None]:
    """The context an epoch trains in: :func:`blas_threads_for`, and with the kernels (a model with
    ``workers``) subnormal floats flushed to zero on the calling thread and on the workers' threads
    (:mod:`digitnet.kernels.denormals`). Everything is as before on exit; the reference layers keep
    IEEE subnormals."""
    workers = getattr(model, "workers", None)
    with blas_threads_for(model, batch_size, threads), flushing(workers is not None) as flushed:
        if workers is None:
            yield
            return
        before = workers.flush_denormals
        workers.flush_denormals = flushed
        try:
            yield
        finally:
            workers.flush_denormals = before


@contextlib.contextmanager
def _workers_on(workers, enabled: bool, limits: contextlib.AbstractContextManager):
    before = workers.enabled
    workers.enabled = enabled
    try:
        with limits:
            yield
    finally:
        workers.enabled = before


__all__ = ["DENSE_BLAS_FLOPS", "SMALL_MATMUL_FLOPS", "blas_runs_products", "blas_thread_count", "blas_threads_for",
           "largest_matmul_flops", "training_context"]
