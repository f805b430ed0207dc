"""Subnormal floats flushed to zero while the kernels train (digitnet.kernels.denormals)."""

from __future__ import annotations

import platform
import sys
import threading

import numpy as np
import pytest

from digitnet.kernels import denormals, speed_up
from digitnet.kernels.parallel import Workers
from digitnet.kernels.threads import training_context
from digitnet.nn import SGD, Dense, ReLU, Sequential

SUBNORMAL = np.float32(1e-39)           # below float32's smallest normal number, 1.18e-38

needs_switch = pytest.mark.skipif(not denormals.supported(),
                                  reason=f"no flush-to-zero switch on {sys.platform} {platform.machine()}")


def doubled() -> np.float32:
    """``1e-39 * 2`` computed in this thread: 2e-39 with IEEE subnormals, 0 when they are flushed."""
    return (np.array([SUBNORMAL]) * np.float32(2))[0]


def test_linux_x86_64_and_aarch64_have_the_switch():
    if sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "aarch64"):
        assert denormals.supported()


@needs_switch
def test_flushing_turns_subnormal_results_to_zero_and_restores_the_mode():
    assert doubled() == np.float32(2e-39) and not denormals.thread_flushes()
    with denormals.flushing() as flushed:
        assert flushed and denormals.thread_flushes()
        assert doubled() == 0
        assert np.float32(1e-30) * np.float32(2) == np.float32(2e-30)     # normal numbers are untouched
    assert doubled() == np.float32(2e-39) and not denormals.thread_flushes()


@needs_switch
def test_flushing_nests_and_off_changes_nothing():
    with denormals.flushing(on=False) as flushed:
        assert not flushed and doubled() != 0
    with denormals.flushing():
        with denormals.flushing():
            assert doubled() == 0
        assert doubled() == 0                      # the inner exit restores the outer mode
    assert doubled() != 0


@needs_switch
def test_flushing_restores_the_mode_after_an_exception():
    with pytest.raises(RuntimeError), denormals.flushing():
        raise RuntimeError("boom")
    assert doubled() != 0


@needs_switch
def test_the_mode_is_per_thread():
    seen, go = {}, threading.Event()

    def other():
        go.wait()
        seen["other"] = doubled()

    thread = threading.Thread(target=other)
    thread.start()                                # started before the mode changes
    with denormals.flushing():
        go.set()
        thread.join()
        assert doubled() == 0
    assert seen["other"] != 0                     # another thread keeps IEEE subnormals


@needs_switch
def test_a_worker_started_while_flushing_is_put_back_when_the_setting_is_off():
    """A new thread inherits its creator's mode: a pool created inside the context must still follow
    ``flush_denormals`` afterwards."""
    workers = Workers(2)
    try:
        with denormals.flushing():
            workers.flush_denormals = True
            assert [v for v in workers.run(lambda part: doubled(), [0, 1])] == [0, 0]   # the pool starts here
        workers.flush_denormals = False
        assert workers.run(lambda part: doubled(), [0, 1]) == [np.float32(2e-39)] * 2
    finally:
        workers.close()


@needs_switch
def test_workers_threads_follow_the_flush_setting():
    workers = Workers(2)
    try:
        def where(part):
            meet.wait(timeout=10)                  # each part waits for the other: two threads run them
            return threading.get_ident(), doubled()

        meet = threading.Barrier(2)
        workers.flush_denormals = True
        with denormals.flushing():
            results = workers.run(where, [0, 1])
        assert results[0][0] != results[1][0]      # one part ran on the worker thread
        assert [value for _, value in results] == [0, 0]
        workers.flush_denormals = False
        results = workers.run(where, [0, 1])
        assert [value for _, value in results] == [np.float32(2e-39)] * 2
    finally:
        workers.close()


def _model(rng):
    return Sequential([Dense(4, 3, rng=rng), ReLU(), Dense(3, 2, rng=rng)], input_shape=(4,), rng=rng)


@needs_switch
def test_the_training_context_flushes_with_the_kernels_only():
    rng = np.random.default_rng(0)
    fast, _, _ = speed_up(_model(rng), threads=2)
    try:
        with training_context(fast, 32):
            assert doubled() == 0 and fast.workers.flush_denormals
        assert doubled() != 0 and not fast.workers.flush_denormals
        with training_context(_model(rng), 32):          # the reference layers: IEEE subnormals
            assert doubled() != 0
    finally:
        fast.workers.close()


@needs_switch
def test_a_decaying_velocity_is_flushed_while_training_with_the_kernels():
    """Momentum 0.9 on a gradient that stops: with the kernels the velocity reaches 0 instead of
    lingering as subnormals (each ten to a hundred times slower to compute with)."""
    def velocity_after(kernels: bool) -> np.ndarray:
        rng = np.random.default_rng(0)
        model = _model(rng)
        optimizer = SGD(lr=1e-3, momentum=0.9)
        if kernels:
            model, _, optimizer = speed_up(model, optimizer=optimizer, threads=1)
        param = model.parameters()[0][0]
        grad = np.full_like(param, 1e-3)
        with training_context(model, 32):
            optimizer.step([(param, grad)])
            grad[...] = 0
            for _ in range(900):                       # 1e-3 * 0.9**900 is about 1e-44
                optimizer.step([(param, grad)])
        return optimizer.state[0]["velocity"]

    assert np.all(velocity_after(kernels=True) == 0)
    reference = velocity_after(kernels=False)
    assert np.all((reference > 0) & (reference < np.finfo(np.float32).tiny))    # subnormal, not zero
