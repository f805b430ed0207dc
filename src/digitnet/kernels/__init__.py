"""The engine: tuned twins of the reference layers, losses and optimizers in :mod:`digitnet.nn`.

Each kernel subclasses its reference class and overrides how it computes (reused buffers, in-place
ufuncs, fused pairs, cache blocking, the Fourier convolution), never what: every kernel is tested
equal to its reference. :func:`speed_up` swaps them in::

    model, loss, optimizer = speed_up(model, loss, optimizer)

The returned objects share the parameter arrays with the ones passed in, and the model's config and
model file are the same either way. ``speed_up(..., threads=N)`` gives every kernel the same
:class:`~digitnet.kernels.parallel.Workers`, which spread the passes over N threads with bit-identical
results for any N (see :mod:`digitnet.kernels.parallel`). A class without a kernel (a new activation, say) is used as it
is. Training uses the kernels by default; ``resolve("reference")``, ``digitnet train --kernels
reference`` or ``DIGITNET_KERNELS=reference`` run the textbook layers alone. NumPy-specific
machinery lives only here, so another backend would be another set of kernels.
"""

from __future__ import annotations

import os
from typing import Any

from digitnet.errors import ConfigError
from digitnet.kernels import activations, batchnorm, conv, dense, losses, optim, pooling  # noqa: F401  (register)
from digitnet.kernels.parallel import Workers, resolve_threads
from digitnet.kernels.registry import KERNELS
from digitnet.kernels.sequential import FastSequential

CHOICES = ("fast", "reference")
ENV_VAR = "DIGITNET_KERNELS"

__all__ = ["CHOICES", "ENV_VAR", "KERNELS", "FastSequential", "Workers", "fast_twin", "resolve", "resolve_threads",
           "speed_up"]


def resolve(kernels: str | None = None) -> str:
    """"fast" or "reference": ``kernels`` if given, else ``$DIGITNET_KERNELS``, else "fast".

    Raises:
        ConfigError: anything else (saying when the value came from the environment).
    """
    where = ""
    if kernels is None:
        kernels = os.environ.get(ENV_VAR) or "fast"   # an empty variable counts as unset
        where = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
    kernels = str(kernels).strip().lower()
    if kernels not in CHOICES:
        raise ConfigError(f"unknown kernels {kernels!r}{where}: choose fast or reference")
    return kernels


def fast_twin(obj: Any) -> Any:
    """The kernel of ``obj`` sharing its arrays, or ``obj`` itself if its class has no kernel."""
    kernel = KERNELS.get(type(obj))
    return kernel.adopt(obj) if kernel is not None else obj


def speed_up(model: Any, loss_fn: Any = None, optimizer: Any = None, threads: int | None = None
             ) -> tuple[Any, Any, Any]:
    """``(model, loss_fn, optimizer)`` with their kernels swapped in (``None`` stays ``None``).

    The model becomes a :class:`FastSequential` of kernels that share the parameters, gradients and
    buffers of the given model's layers. The model's kernels and the optimizer share one
    :class:`Workers` of ``threads`` threads (None: ``$DIGITNET_THREADS``, else the cores).
    """
    workers = Workers(threads)
    workers.enabled = False       # until training turns them on (digitnet.kernels.threads.blas_threads_for)
    if model is not None:
        if not isinstance(model, FastSequential):
            model = FastSequential([fast_twin(layer) for layer in model.layers], model.input_shape, model.rng)
        model.use_workers(workers)
    if optimizer is not None:
        optimizer = fast_twin(optimizer)
        if hasattr(optimizer, "workers"):
            optimizer.workers = workers
    return model, fast_twin(loss_fn) if loss_fn is not None else None, optimizer
