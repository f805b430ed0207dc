"""What every kernel shares: scratch arrays reused from batch to batch, and adoption of a reference layer.

Two conventions keep a training step free of large allocations:

- in training mode (``training=True``) a kernel may write its output into a work buffer it owns
  and reuses: that output is valid until the kernel's next ``forward``. In inference mode every
  output is a fresh array the caller may keep;
- ``backward`` may overwrite ``grad_out`` (it is a temporary of the layer above), and writes the
  gradients into the arrays already in ``grads``.

``compute_input_grad = False`` (set by :class:`~digitnet.kernels.sequential.FastSequential` on the
first layers of a model) skips ``dL/dx``, which nobody needs for the input images.

``workers`` (:class:`~digitnet.kernels.parallel.Workers`) spreads a kernel's passes over the cores;
:func:`~digitnet.kernels.speed_up` gives every kernel of a model the same workers. A part that needs
scratch space of its own takes a :meth:`Buffered.lane_buffer`, one per thread.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from digitnet.kernels.parallel import SERIAL, Workers


class Buffered:
    """Mixin for kernels: work buffers, and :meth:`adopt` to become the fast twin of a reference object."""

    compute_input_grad = True
    workers: Workers = SERIAL

    @classmethod
    def adopt(cls, reference: Any) -> Any:
        """A kernel that shares ``reference``'s settings, parameters, gradients and buffers (the same
        arrays, not copies), so training it trains the reference model too."""
        fast = object.__new__(cls)
        fast.__dict__.update(reference.__dict__)
        fast._work = {}
        fast.setup()
        return fast

    def setup(self) -> None:
        """Kernel-only state, created on adoption (subclasses extend it)."""

    def work_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A reusable scratch array of ``shape`` and ``dtype``, allocated on first use."""
        buf = self._work.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            self._work[name] = buf
        return buf

    def lane_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """:meth:`work_buffer` private to the calling thread: scratch space for one part of a parallel pass."""
        return self.work_buffer(f"{name}@{threading.get_ident()}", shape, dtype)

    def lane_chunk(self, name: str, count: int, image_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The calling thread's scratch array for a chunk of ``count`` images of ``image_shape``.

        The front of an array that only grows, so that chunks of near-equal sizes share one
        allocation instead of trading it back and forth.
        """
        key = f"{name}@{threading.get_ident()}"
        held = self._work.get(key)
        if held is None or len(held) < count or held.shape[1:] != tuple(image_shape) or held.dtype != dtype:
            held = np.empty((count, *image_shape), dtype=dtype)
            self._work[key] = held
        return held[:count]

    def output_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype, training: bool) -> np.ndarray:
        """Reused buffer in training mode, fresh array in inference mode (see the module docstring)."""
        if training:
            return self.work_buffer(name, shape, dtype)
        return np.empty(shape, dtype=dtype)

    def release_buffers(self) -> None:
        """Drop work buffers and what forward kept for backward."""
        self._work = {}
        super().release_buffers()
