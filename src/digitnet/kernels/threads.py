"""How many BLAS threads a training step runs on.

A second BLAS thread helps large matrix products, but while it busy-waits between calls it slows
the main thread's element-wise work; for small networks that costs more than it saves. The rule
only depends on the network and the batch size, so the same run always gets the same thread
count: the count changes the last bits of the results, and resumed runs must stay bit-identical.
docs/SPEED.md ("BLAS threads by network size") has the measurements behind the threshold.
"""

from __future__ import annotations

import contextlib
import math
import os

#: A training step whose largest matrix product is below this many FLOPs runs BLAS on one thread.
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


def blas_threads_for(model, batch_size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for small networks (see SMALL_MATMUL_FLOPS), else the BLAS default.

    Uses threadpoolctl when it is installed (it comes with scikit-learn); without it, or with an
    explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment, nothing changes.
    """
    if largest_matmul_flops(model, batch_size) >= SMALL_MATMUL_FLOPS or \
            "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


__all__ = ["SMALL_MATMUL_FLOPS", "blas_threads_for", "largest_matmul_flops"]
