"""The kernels' worker pool (digitnet.kernels.parallel) and its promise: any thread count, the same weights."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest

from digitnet.config import load_preset
from digitnet.errors import ConfigError
from digitnet.kernels import parallel
from digitnet.kernels.parallel import Workers, product_parts, resolve_threads, split
from digitnet.training import build_trainer


def test_split_covers_every_row_once_in_order():
    for length in (0, 1, 5, 128):
        for parts in (1, 2, 3, 8):
            slices = split(length, parts)
            covered = np.concatenate([np.arange(length)[s] for s in slices]) if slices else np.arange(0)
            np.testing.assert_array_equal(covered, np.arange(length))
            assert len(slices) == max(1, min(parts, length))
            assert all(s.stop > s.start for s in slices) or length == 0


def test_products_are_cut_by_their_shape_alone():
    assert product_parts(128, 1e9) == [slice(0, 64), slice(64, 128)]
    assert product_parts(128, 1e3) == [slice(0, 128)]            # too small to pay for a second thread
    assert product_parts(1, 1e9) == [slice(0, 1)]


def test_run_returns_results_in_part_order_from_several_threads():
    workers = Workers(3)
    seen = set()
    meet = threading.Barrier(2)

    def work(part):
        if part < 2:
            meet.wait(timeout=10)               # parts 0 and 1 wait for each other: two threads run them
        seen.add(threading.get_ident())
        return part * part

    assert workers.run(work, list(range(10))) == [i * i for i in range(10)]
    assert len(seen) >= 2                                         # not all on the calling thread
    workers.close()
    assert Workers(1).run(work, [3, 4]) == [9, 16]
    assert Workers(2).run(lambda part: -part, [5]) == [-5]


def test_an_error_in_a_part_reaches_the_caller_after_every_thread_stopped():
    workers = Workers(2)
    finished, running = [], []

    def work(part):
        running.append(part)
        if part == 1:
            raise ValueError("part 1 failed")
        time.sleep(0.01)
        finished.append(part)
        running.remove(part)

    with pytest.raises(ValueError, match="part 1 failed"):
        workers.run(work, [0, 1, 2, 3])
    assert running == [1]                      # nothing still running when the error arrives
    assert 1 not in finished and set(finished) <= {0, 2, 3} and 0 in finished
    workers.close()


def test_a_slow_thread_leaves_its_parts_to_the_others():
    """The parts are taken from a shared queue: while one thread is held up, the other runs the rest."""
    workers = Workers(2)
    ran_by: dict[int, int] = {}
    caller = threading.get_ident()

    def work(part):
        if part == 0 and threading.get_ident() == caller:
            time.sleep(0.3)                    # the caller takes part 0 first and is slowed there
        ran_by[part] = threading.get_ident()
        return part

    assert workers.run(work, list(range(8))) == list(range(8))
    workers.close()
    assert sum(1 for ident in ran_by.values() if ident != caller) >= 6


def test_element_wise_passes_split_by_thread_and_size():
    workers = Workers(2)
    assert workers.split(128, 10) == [slice(0, 128)]                       # small: one piece
    assert workers.split(128, 64 * parallel.MIN_PART_BYTES) == [slice(0, 64), slice(64, 128)]
    assert Workers(1).split(128, 1 << 30) == [slice(0, 128)]


def test_thread_setting(monkeypatch):
    monkeypatch.delenv(parallel.ENV_VAR, raising=False)
    assert resolve_threads() == parallel.available_cores()
    assert resolve_threads(3) == 3
    monkeypatch.setenv(parallel.ENV_VAR, "5")
    assert resolve_threads() == 5 and resolve_threads(2) == 2
    monkeypatch.setenv(parallel.ENV_VAR, "many")
    with pytest.raises(ConfigError, match=r"whole number >= 1, got .many. \(from \$DIGITNET_THREADS\)"):
        resolve_threads()
    with pytest.raises(ConfigError, match="got 0"):
        resolve_threads(0)


def test_workers_pickle_without_their_threads():
    workers = Workers(2)
    workers.run(lambda part: part, [0, 1])
    copy = pickle.loads(pickle.dumps(workers))
    assert copy.threads == 2 and copy.run(lambda part: part + 1, [0, 1]) == [1, 2]
    workers.close()
    copy.close()


def _weights_after_training(preset: str, threads: int, data, **changes) -> dict[str, np.ndarray]:
    config = load_preset(preset).replace(epochs=1, **changes)
    trainer = build_trainer(config, data, kernels="fast", threads=threads, log=lambda message: None)
    assert trainer.model.workers.threads == threads
    trainer.run()
    return {name: param.copy() for name, param, _ in trainer.model.named_parameters()}


@pytest.mark.parametrize("preset, changes, on_workers", [
    ("cnn-best", {}, True),                                  # conv (im2col, Fourier), BatchNorm, pooling, dropout, Adam
    ("lenet5", {}, True),                                    # tanh, average pooling, im2col with 6 channels
    ("mlp-best", {"batch_size": 128}, False),                # large Dense layers: BLAS's threads, workers off
])
def test_one_two_and_three_threads_give_bit_identical_weights(preset, changes, on_workers, mnist_train, monkeypatch):
    """An epoch on 640 MNIST images: the weights are the same bits whatever the thread count, and the
    parallel paths really ran (the pool ran more than one part) where the workers are on; a network of
    large Dense layers runs its products on BLAS's threads instead, with the workers off."""
    data = mnist_train.head(640)
    cuts = []
    real_run = Workers.run

    def counting_run(self, fn, parts):
        cuts.append((self.threads, len(parts), self.enabled))
        return real_run(self, fn, parts)

    monkeypatch.setattr(Workers, "run", counting_run)
    one = _weights_after_training(preset, 1, data, **changes)
    assert not any(threads > 1 for threads, _, _ in cuts)
    for threads in (2, 3):
        cuts.clear()
        many = _weights_after_training(preset, threads, data, **changes)
        ran_in_parallel = any(parts > 1 and enabled for _, parts, enabled in cuts)
        assert ran_in_parallel == on_workers, f"parallel parts: {ran_in_parallel}, expected {on_workers}"
        for name in one:
            np.testing.assert_array_equal(many[name], one[name], err_msg=f"{preset} {name}, {threads} threads")
