"""Subnormal floats flushed to zero while the kernels train.

A float32 below ``2**-126`` (about 1.2e-38) is *subnormal*: it has lost the implicit leading bit of
its mantissa. x86 and ARM cores compute with subnormal inputs or results through a slow path, ten to
a hundred times slower per element. Training makes them: where a gradient stays zero, a momentum
velocity multiplied by 0.9 at every step (or Adam's first moment by ``beta1``) decays from 1e-3 to
below 1e-38 in about 800 steps, two epochs of MNIST. Measured here, 784-800-10 with Nesterov
momentum had 8,000 subnormal velocities after five epochs, and its epochs grew from 1.10 s to 1.31 s;
with subnormals flushed, every epoch took 1.06-1.10 s and the test accuracy was the same
(docs/SPEED.md, "Subnormal floats").

Each core has two switches for this, set per thread: on x86-64, the MXCSR register's FTZ bit (flush
subnormal results to zero) and DAZ bit (read subnormal inputs as zero); on 64-bit ARM, the FPCR
register's FZ bit (both). TensorFlow and XLA set them on their CPU threads; PyTorch offers
``torch.set_flush_denormal``. NumPy has no switch, so this module sets them through the C library's
``fegetenv``/``fesetenv`` (ctypes, no compiled code), whose ``fenv_t`` holds the register:

- Linux x86-64 (glibc): ``fenv_t`` is the 28-byte x87 environment followed by MXCSR at byte 28;
- Linux AArch64 (glibc): ``fenv_t`` is FPCR at byte 0, then FPSR.

On other systems :func:`supported` is False and nothing changes. A self-check runs once: the
switches must turn ``1e-39 * 2`` into 0, or they are never used.

Only the kernels' training context (:func:`digitnet.kernels.threads.training_context`) flushes: the
calling thread for the epoch, restored afterwards, and the kernels' worker threads while they run its
parts (:meth:`~digitnet.kernels.parallel.Workers.run`), so every thread computes in the same mode and
runs stay bit-identical for any thread count. The reference layers compute with IEEE subnormals, as
written.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
import threading
from collections.abc import Iterator

import numpy as np

#: (offset of the control register in ``fenv_t``, its size in bytes, the bits that flush), by machine
_LAYOUTS = {
    "x86_64": (28, 4, (1 << 15) | (1 << 6)),     # MXCSR: FTZ | DAZ
    "amd64": (28, 4, (1 << 15) | (1 << 6)),
    "aarch64": (0, 4, 1 << 24),                    # FPCR: FZ
    "arm64": (0, 4, 1 << 24),
}
#: room for any fenv_t (glibc's is 32 bytes on x86-64, 8 on AArch64)
_ENV_BYTES = 64

_state: dict[str, object] = {}
_thread = threading.local()


def _library():
    """The C math library with ``fegetenv``/``fesetenv``, or None (checked once)."""
    if "libm" not in _state:
        libm = None
        layout = _LAYOUTS.get(platform.machine().lower())
        if sys.platform.startswith("linux") and layout is not None:
            try:
                libm = ctypes.CDLL("libm.so.6")
                libm.fegetenv.argtypes = libm.fesetenv.argtypes = [ctypes.c_void_p]
            except (OSError, AttributeError):
                libm = None
        _state["libm"], _state["layout"] = libm, layout
    return _state["libm"]


def _get_env() -> ctypes.Array:
    env = ctypes.create_string_buffer(_ENV_BYTES)
    if _library().fegetenv(env) != 0:
        raise OSError("fegetenv failed")
    return env


def _set_env(env: ctypes.Array) -> None:
    if _library().fesetenv(env) != 0:
        raise OSError("fesetenv failed")


def _with_flush(env: ctypes.Array, on: bool) -> ctypes.Array:
    """A copy of ``env`` with the flush bits set (``on``) or cleared."""
    offset, size, bits = _state["layout"]
    copy = ctypes.create_string_buffer(env.raw, _ENV_BYTES)
    register = int.from_bytes(copy.raw[offset:offset + size], "little")
    register = register | bits if on else register & ~bits
    copy[offset:offset + size] = register.to_bytes(size, "little")
    return copy


def supported() -> bool:
    """Whether this machine's threads can flush subnormals (checked once, by computing ``1e-39 * 2``)."""
    if "supported" not in _state:
        works = False
        if _library() is not None:
            tiny = np.array([1e-39], dtype=np.float32)                    # subnormal in float32
            saved = _get_env()
            try:
                _set_env(_with_flush(saved, True))
                flushed = (tiny * np.float32(2))[0] == 0
            finally:
                _set_env(saved)
            works = bool(flushed) and (tiny * np.float32(2))[0] != 0     # and the default mode is back
        _state["supported"] = works
    return bool(_state["supported"])


@contextlib.contextmanager
def flushing(on: bool = True) -> Iterator[bool]:
    """While active, the calling thread flushes subnormal floats to zero (``on``) or keeps them.

    Yields whether the mode is in effect (False where :func:`supported` is False, or ``on`` is
    False). On exit the thread's whole floating-point environment is restored, as it was.
    """
    if not on or not supported():
        yield False
        return
    saved = _get_env()
    _set_env(_with_flush(saved, True))
    before = getattr(_thread, "flush", None)
    _thread.flush = True
    try:
        yield True
    finally:
        _set_env(saved)
        _thread.flush = before


def match_thread(on: bool) -> None:
    """Put this thread in flush mode ``on`` (for worker threads: the mode stays until changed).

    Cheap when the thread is already in that mode (a thread-local flag, no call into the C library).
    A new thread starts in the mode of the thread that created it, so the first call reads the register.
    """
    if not supported():
        return
    current = getattr(_thread, "flush", None)
    if current is None:
        current = thread_flushes()
    if current == on:
        _thread.flush = on
        return
    _set_env(_with_flush(_get_env(), on))
    _thread.flush = on


def thread_flushes() -> bool:
    """Whether this thread is flushing subnormals now (read from the register, for tests)."""
    if not supported():
        return False
    offset, size, bits = _state["layout"]
    return bool(int.from_bytes(_get_env().raw[offset:offset + size], "little") & bits == bits)


__all__ = ["flushing", "match_thread", "supported", "thread_flushes"]
