"""FastSGD, FastAdam, FastAdamW: the hand-computed steps of tests/nn/test_optim.py, updates in cache-sized
blocks (the same numbers as on the whole array), scratch space that is not checkpoint state, shared state."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.optim as fast_optim
from digitnet.errors import ConfigError
from digitnet.kernels import KERNELS, fast_twin
from digitnet.kernels.optim import FastAdam, FastAdamW, FastSGD
from digitnet.nn import SGD, Adam, AdamW
from digitnet.nn.rmsprop import RMSprop
from tests.nn.test_optim import HAND_STEPS, assert_steps, run

MAKERS = {
    "sgd": lambda: SGD(0.1, weight_decay=0.01),
    "momentum": lambda: SGD(0.05, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: Adam(1e-2),
    "adam_decay": lambda: Adam(1e-2, weight_decay=0.01),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.05),
}


@pytest.mark.parametrize("name", list(HAND_STEPS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_kernels_take_the_hand_computed_steps(name, dtype):
    make, steps, shape, expected = HAND_STEPS[name]
    optimizer = fast_twin(make())
    assert type(optimizer) is KERNELS[type(make())]
    assert_steps(run(optimizer, steps=steps, shape=shape, dtype=dtype), expected, dtype)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("block_size", [1, 7, 16])
def test_blocked_updates_give_the_numbers_of_whole_array_updates(name, block_size, rng, monkeypatch):
    """A matrix larger than 4 blocks is updated in blocks of rows: element-wise formulas give the same
    numbers, bit for bit, as one update of the whole array."""
    shapes = [(70, 9), (9,), (3, 2, 2, 2), ()]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    whole, blocked = [p.copy() for p in params], [p.copy() for p in params]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    for target, size in ((whole, 1 << 30), (blocked, block_size)):
        monkeypatch.setattr(fast_optim, "BLOCK_SIZE", size)
        optimizer = fast_twin(MAKERS[name]())
        for step in grads:
            optimizer.step(list(zip(target, [g.copy() for g in step], strict=True)))
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], params[0])


def test_only_parameters_of_more_than_four_blocks_are_blocked(rng, monkeypatch):
    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 16)
    optimizer = fast_twin(SGD(0.1, momentum=0.9))
    seen = _recording(optimizer, monkeypatch)
    small, large = np.ones((8, 8), np.float32), np.ones((20, 8), np.float32)   # 64 <= 4 * 16 < 160
    optimizer.step([(small, np.ones_like(small)), (large, np.ones_like(large))])
    assert seen == [(8, 8)] + [(2, 8)] * 10                   # rows of about BLOCK_SIZE scalars
    np.testing.assert_allclose(large, 0.9)                    # and every block was updated


@pytest.mark.parametrize("name", list(MAKERS))
def test_steps_update_in_place_and_never_touch_the_gradients(name, rng, monkeypatch):
    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 8)
    optimizer = fast_twin(MAKERS[name]())
    param = rng.standard_normal((12, 5)).astype(np.float32)
    grad = rng.standard_normal((12, 5)).astype(np.float32)
    param_before, grad_before = param.copy(), grad.copy()
    pairs = [(param, grad)]
    optimizer.step(pairs)
    assert pairs[0][0] is param and param.dtype == np.float32
    assert not np.array_equal(param, param_before)
    np.testing.assert_array_equal(grad, grad_before)
    assert all(a.dtype == np.float32 for slots in optimizer.state for a in slots.values())


@pytest.mark.parametrize("name", list(MAKERS))
def test_scratch_arrays_are_not_checkpoint_state_and_checkpoints_cross_over(name, rng):
    """The kernels keep scratch slots next to the state; a checkpoint holds only the reference's slots,
    so training resumes exactly with either implementation."""
    grads = [rng.standard_normal((4, 3)) for _ in range(4)]
    straight, expected = MAKERS[name](), np.ones((4, 3))
    for g in grads:
        straight.step([(expected, g)])
    fast, param = fast_twin(MAKERS[name]()), np.ones((4, 3))
    for g in grads[:2]:
        fast.step([(param, g)])
    assert any(k.startswith("scratch") for slots in fast.state for k in slots)
    arrays = {k: v.copy() for k, v in fast.state_arrays().items()}
    assert not any("scratch" in k for k in arrays)
    reference = MAKERS[name]()
    reference.load_state_arrays(arrays, fast.steps, num_params=1)
    for g in grads[2:]:
        reference.step([(param, g)])
    np.testing.assert_allclose(param, expected, rtol=1e-12, atol=1e-14)
    # and back: the reference's checkpoint resumes the kernel
    resumed = fast_twin(MAKERS[name]())
    resumed.load_state_arrays(reference.state_arrays(), reference.steps, num_params=1)
    assert resumed.steps == 4 and set(resumed.state_arrays()) == set(arrays)


def test_a_twin_continues_from_the_reference_state(rng):
    grads = [rng.standard_normal(5) for _ in range(4)]
    straight, expected = Adam(0.01), np.ones(5)
    for g in grads:
        straight.step([(expected, g)])
    reference, param = Adam(0.01), np.ones(5)
    for g in grads[:2]:
        reference.step([(param, g)])
    fast = fast_twin(reference)
    assert type(fast) is FastAdam and fast.state is reference.state and fast.steps == 2
    for g in grads[2:]:
        fast.step([(param, g)])
    np.testing.assert_allclose(param, expected, rtol=1e-12)


def test_the_kernels_keep_the_reference_settings():
    for reference, kernel in ((SGD(0.2, momentum=0.5, nesterov=True), FastSGD), (Adam(3e-4, beta2=0.99), FastAdam),
                              (AdamW(1e-3, weight_decay=0.2), FastAdamW)):
        fast = fast_twin(reference)
        assert type(fast) is kernel and fast.config() == reference.config() and fast.name == reference.name
    assert fast_twin(AdamW()).decoupled and not fast_twin(Adam()).decoupled


def test_an_optimizer_without_a_kernel_is_used_as_it_is():
    rmsprop = RMSprop(0.01)
    assert fast_twin(rmsprop) is rmsprop


def test_step_with_a_different_number_of_parameters_raises():
    optimizer = fast_twin(SGD(0.1))
    optimizer.step([(np.ones(2), np.ones(2))])
    with pytest.raises(ConfigError, match="state for 1 parameters"):
        optimizer.step([(np.ones(2), np.ones(2)), (np.ones(2), np.ones(2))])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam_decay", "adamw"])
def test_weight_decay_shrinks_matrices_but_not_biases_in_blocks_too(name, monkeypatch):
    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 2)
    optimizer = fast_twin(MAKERS[name]())
    weights, bias = np.ones((10, 2)), np.ones(10)
    for _ in range(3):
        optimizer.step([(weights, np.zeros((10, 2))), (bias, np.zeros(10))])
    np.testing.assert_array_equal(bias, 1)            # zero gradient and no decay: untouched
    assert np.all(weights < 1)


def _recording(optimizer, monkeypatch, now: list[float] | None = None,
               costs: dict[int, float] | None = None) -> list[tuple[int, ...]]:
    """Record the shape of every ``_update``; with ``now``, each advances that clock by ``costs[rows]``."""
    seen: list[tuple[int, ...]] = []
    original = optimizer._update

    def recording(param, grad, state):
        seen.append(param.shape)
        if now is not None:
            now[0] += costs[param.shape[0]]
        original(param, grad, state)

    monkeypatch.setattr(optimizer, "_update", recording)
    return seen


@pytest.mark.parametrize(("block_cost", "kept"), [(1.0, "whole"), (0.1, "blocks")])
def test_on_one_thread_a_large_parameter_keeps_the_layout_its_timed_trials_found_faster(block_cost, kept, rng,
                                                                                        monkeypatch):
    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 16)
    optimizer = fast_twin(SGD(0.05, momentum=0.9, nesterov=True))
    now = [0.0]
    # a whole update "takes" 3 s; ten blocks 10 s (blocks slower) or 1 s (blocks faster)
    seen = _recording(optimizer, monkeypatch, now, costs={20: 3.0, 2: block_cost})
    monkeypatch.setattr(fast_optim, "clock", lambda: now[0])
    param, whole_param = np.ones((20, 8), np.float32), np.ones((20, 8), np.float32)
    whole = fast_twin(SGD(0.05, momentum=0.9, nesterov=True))
    whole._layouts = {(0, (20, 8)): "whole"}                          # no trials: whole arrays throughout
    layouts = []
    for _ in range(fast_optim.TRIAL_UPDATES + 3):
        grad = rng.standard_normal((20, 8)).astype(np.float32)
        seen.clear()
        optimizer.step([(param, grad)])
        whole.step([(whole_param, grad.copy())])
        layouts.append("whole" if seen == [(20, 8)] else "blocks" if seen == [(2, 8)] * 10 else seen)
    # the trials alternate, then the faster layout stays
    assert layouts == ["blocks", "whole"] * (fast_optim.TRIAL_UPDATES // 2) + [kept] * 3
    assert optimizer._layouts == {(0, (20, 8)): kept}
    np.testing.assert_array_equal(param, whole_param)                 # whatever the layout, the same bits
    assert not np.array_equal(param, 1)


def test_shared_over_threads_a_large_parameter_is_always_updated_in_blocks(monkeypatch):
    from digitnet.kernels.parallel import Workers

    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 16)
    optimizer = fast_twin(SGD(0.1, momentum=0.9))
    workers = Workers(2)
    try:
        optimizer.workers = workers
        seen = _recording(optimizer, monkeypatch)
        param = np.ones((20, 8), np.float32)
        for _ in range(fast_optim.TRIAL_UPDATES + 2):
            optimizer.step([(param, np.ones_like(param))])
    finally:
        workers.close()
    assert seen == [(2, 8)] * 10 * (fast_optim.TRIAL_UPDATES + 2)
    assert not getattr(optimizer, "_layouts", {})
