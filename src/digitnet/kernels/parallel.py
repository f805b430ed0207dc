"""A parallel map for kernels: the same operation on disjoint parts of an array, on all the cores.

NumPy releases the GIL inside its element-wise loops and its BLAS calls, so the same operation on two
halves of a batch, run in two threads, runs on two cores. :class:`Workers` is a small persistent pool
(``threads - 1`` worker threads plus the calling thread) that every kernel of a model shares.

Three rules keep runs reproducible whatever the thread count:

- **Parts write disjoint slices.** Each part of an element-wise pass, a copy or a product owns its
  rows of the output; nothing is written by two parts.
- **How a product or a reduction is cut depends on the shapes only** (:func:`product_parts`), never on
  the thread count; the threads only decide who runs each part, and one thread runs the same parts in
  order. A sum over parts (a weight gradient summed over the batch) is added up by the caller in part
  order. So one, two or eight threads give bit-identical numbers. Element-wise passes give the same
  numbers however they are cut, so they are cut by the thread count (:meth:`Workers.split`).
- **Either BLAS's threads or the workers, never both, and chosen by the network**
  (:func:`digitnet.kernels.threads.blas_threads_for`): while the workers are on, BLAS runs on one
  thread (a BLAS thread pool beside them would oversubscribe the cores); while BLAS's own threads
  run a network's products, the workers are off (``enabled`` False). BLAS's thread count changes the
  last bits of some products, so it never follows the ``threads`` setting.

Small arrays are not split: handing a part to another thread (and the interpreter lock back and
forth) costs tens of microseconds, more than a pass over a few hundred kilobytes; docs/SPEED.md has
the measurements behind ``MIN_PART_BYTES`` and ``MIN_PART_FLOPS``. The thread count is a setting:
``threads`` arguments, ``digitnet train --threads N`` and ``$DIGITNET_THREADS``; the default is the
number of cores this process may run on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from digitnet.errors import ConfigError
from digitnet.kernels.denormals import match_thread

ENV_VAR = "DIGITNET_THREADS"
#: an element-wise pass over fewer bytes than this per part runs in one piece
MIN_PART_BYTES = 1 << 20
#: a product of fewer FLOPs than this per part (and a small output) runs in one piece
MIN_PART_FLOPS = 40e6
#: products and reductions big enough to split are cut in this many parts (a shape-only rule, see above)
PRODUCT_PARTS = 2

Part = TypeVar("Part")


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):          # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | str | None = None) -> int:
    """The thread count: ``threads`` if given, else ``$DIGITNET_THREADS``, else :func:`available_cores`.

    Raises:
        ConfigError: not a whole number of at least 1 (saying when it came from the environment).
    """
    where = ""
    if threads is None or threads == "":
        threads = os.environ.get(ENV_VAR) or None
        if threads is None:
            return available_cores()
        where = f" (from ${ENV_VAR})"
    try:
        count = int(str(threads).strip())
    except ValueError:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}{where}") from None
    if count < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}{where}")
    return count


def split(length: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(length)`` of near-equal size (none empty; fewer if short)."""
    parts = max(1, min(parts, length))
    bounds = [length * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def product_parts(rows: int, flops: float, nbytes: int = 0) -> list[slice]:
    """How a product (or a reduction) of ``rows`` independent rows is cut: :data:`PRODUCT_PARTS` slices
    if each part keeps at least MIN_PART_FLOPS of its ``flops`` or MIN_PART_BYTES of the ``nbytes`` it
    writes (memory-bound products: transforms with a short inner dimension), else one. Shapes only."""
    if rows >= PRODUCT_PARTS and (flops >= PRODUCT_PARTS * MIN_PART_FLOPS or nbytes >= PRODUCT_PARTS * MIN_PART_BYTES):
        return split(rows, PRODUCT_PARTS)
    return [slice(0, rows)]


class Workers:
    """A pool of ``threads - 1`` worker threads plus the calling thread, created on first use.

    ``run(fn, parts)`` calls ``fn(part)`` for every part, waits for all of them and returns the
    results in part order. Each thread (the caller too) takes the next part not yet taken until none
    is left, so a thread slowed by another process on its core leaves more of the parts to the others
    instead of holding them all up; which thread runs a part changes no number (the rules above). An
    exception in a part stops that thread; the others finish the remaining parts, and the exception
    is raised in the caller once every thread has stopped.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = resolve_threads(threads)
        #: False outside training and while BLAS's own threads run a network's products (see
        #: :func:`digitnet.kernels.threads.blas_threads_for`): BLAS's threads then use the other
        #: cores, so everything runs on the calling thread
        self.enabled = True
        #: whether the worker threads flush subnormal floats to zero while they run parts: the
        #: training context sets it with the calling thread's mode (:mod:`digitnet.kernels.denormals`),
        #: so every thread computes alike
        self.flush_denormals = False
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Workers(threads={self.threads})"

    def __getstate__(self) -> dict[str, Any]:     # a pool cannot be copied or pickled: start a new one
        return {**self.__dict__, "_pool": None}

    def product_parts(self, rows: int, flops: float, nbytes: int = 0) -> list[slice]:
        """:func:`product_parts`, or one part while the workers are off (``enabled`` False)."""
        return product_parts(rows, flops, nbytes) if self.enabled else [slice(0, rows)]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="digitnet")
        return self._pool

    def split(self, length: int, nbytes: int) -> list[slice]:
        """Slices of ``range(length)`` for an element-wise pass over ``nbytes``: one per thread, each of
        at least MIN_PART_BYTES (so small arrays stay whole)."""
        by_size = max(1, int(nbytes // MIN_PART_BYTES))
        return split(length, min(self.threads, by_size))

    def run(self, fn: Callable[[Part], Any], parts: Sequence[Part]) -> list[Any]:
        """``[fn(part) for part in parts]``, spread over the threads (see the class docstring)."""
        if self.threads == 1 or len(parts) < 2 or not self.enabled:
            return [fn(part) for part in parts]
        pool = self._executor()
        lanes = min(self.threads, len(parts))
        flush = self.flush_denormals
        results: list[Any] = [None] * len(parts)
        queue = iter(range(len(parts)))            # shared; next() runs under the interpreter lock: each index once

        def lane(start: int) -> None:
            if start:                                  # a worker thread: the caller's float mode
                match_thread(flush)
            for index in queue:
                results[index] = fn(parts[index])

        futures = [pool.submit(lane, start) for start in range(1, lanes)]
        try:
            lane(0)
        finally:
            wait(futures)                          # no part still running when this returns or raises
        for future in futures:
            future.result()
        return results

    def each(self, fn: Callable[[slice], Any], length: int, nbytes: int) -> None:
        """``fn(rows)`` for the slices of :meth:`split`: an element-wise pass over ``length`` rows."""
        if self.threads == 1 or nbytes < 2 * MIN_PART_BYTES or not self.enabled:   # one piece
            fn(slice(0, length))
        else:
            self.run(fn, self.split(length, nbytes))

    def close(self) -> None:
        """Stop the worker threads (a later ``run`` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


#: the one-thread workers every kernel starts with, until :func:`digitnet.kernels.speed_up` hands out its own
SERIAL = Workers(1)

__all__ = ["ENV_VAR", "MIN_PART_BYTES", "MIN_PART_FLOPS", "PRODUCT_PARTS", "SERIAL", "Workers", "available_cores",
           "product_parts", "resolve_threads", "split"]
