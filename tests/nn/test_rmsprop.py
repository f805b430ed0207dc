"""RMSprop against hand-computed steps, its settings, weight decay and checkpoint state.

p0 = (1, -2), lr = 0.1, alpha = 0.99, eps = 1e-8 and the gradients g1 = (0.5, -1), g2 = (0.1, 0.2),
g3 = (-0.3, 0.4) of tests/nn/test_optim.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.nn as nn
from digitnet.errors import ConfigError
from digitnet.nn import make_optimizer
from digitnet.nn.registry import entry
from digitnet.nn.rmsprop import RMSprop
from tests.nn.test_optim import LR, assert_steps, run

# t=1: v = 0.01 g1^2 = (0.0025, 0.01); sqrt(v) = (0.05, 0.1)
#      step = 0.1 g / (sqrt(v) + 1e-8) = (0.9999998, -0.9999999)       p1 = (2e-7, -1.0000001)
#      (about lr * sign(g), but without Adam's bias correction v is 100 times smaller than g^2)
# t=2: v = 0.99 v + 0.01 g2^2 = (0.002575, 0.0103); sqrt(v) = (0.050744, 0.101489)
#      step = 0.1 (0.1 / 0.050744, 0.2 / 0.101489) = (0.197066, 0.197066)   p2 = (-0.197066, -1.197066)
# t=3: v = (0.00344925, 0.011797); sqrt(v) = (0.058730, 0.108614)
#      step = 0.1 (-0.3 / 0.058730, 0.4 / 0.108614) = (-0.510810, 0.368276)  p3 = (0.313744, -1.565343)
EXPECTED = [[1.9999996048181146e-07, -1.0000000999999905], [-0.19706561679795428, -1.1970659362153753],
            [0.31374374046542775, -1.5653425672739716]]
# with weight_decay = 0.1 (a matrix): g = grad + 0.1 p
# t=1: g = (0.6, -1.2); v = 0.01 g^2 = (0.0036, 0.0144); sqrt(v) = (0.06, 0.12)
#      step = 0.1 g / (sqrt(v) + 1e-8) ~ (1, -1)                        p1 = (1.7e-7, -1.0000001)
# t=2: g = (0.1 + 1.7e-8, 0.2 - 0.10000001) ~ (0.1, 0.1); v = 0.99 v + 0.01 g^2 = (0.003664, 0.014356)
#      step = 0.1 g / sqrt(v) = (0.165204, 0.083461)                     p2 = (-0.165204, -1.083461)
EXPECTED_DECAY = [[1.666666393784766e-07, -1.000000083333327], [-0.16520448293718384, -1.0834610101171414]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rmsprop_steps(dtype):
    assert_steps(run(RMSprop(LR), dtype=dtype), EXPECTED, dtype)


def test_rmsprop_with_coupled_weight_decay_steps():
    assert_steps(run(RMSprop(LR, weight_decay=0.1), steps=2, shape=(1, 2)), EXPECTED_DECAY)
    # a vector (bias) is not decayed: the plain steps
    assert_steps(run(RMSprop(LR, weight_decay=0.1), steps=2), EXPECTED[:2])


def test_rmsprop_keeps_the_running_mean_of_the_squared_gradient():
    optimizer = RMSprop(LR)
    run(optimizer)
    np.testing.assert_allclose(optimizer.state[0]["v"], [0.00344925, 0.011797], rtol=1e-12)
    assert optimizer.steps == 3


def test_rmsprop_steps_shrink_where_gradients_are_large():
    """The same relative gradient gives the same step, whatever its scale (after one step)."""
    small, large = np.zeros(2), np.zeros(2)
    RMSprop(0.01).step([(small, np.array([1e-3, 1e-3]))])
    RMSprop(0.01).step([(large, np.array([1e3, 1e3]))])
    np.testing.assert_allclose(small, large, rtol=1e-4)
    np.testing.assert_allclose(small, -0.1, rtol=1e-4)            # lr * g / sqrt(0.01 g^2) = 10 lr


def test_rmsprop_state_round_trip_resumes_exactly(rng):
    grads = [rng.standard_normal((3, 2)) for _ in range(5)]
    straight, param = RMSprop(0.05, alpha=0.9, weight_decay=0.01), np.ones((3, 2))
    for g in grads:
        straight.step([(param, g)])
    first, resumed = RMSprop(0.05, alpha=0.9, weight_decay=0.01), np.ones((3, 2))
    for g in grads[:2]:
        first.step([(resumed, g)])
    arrays = {k: v.copy() for k, v in first.state_arrays().items()}
    assert set(arrays) == {"0.v"}
    second = RMSprop(0.05, alpha=0.9, weight_decay=0.01)
    second.load_state_arrays(arrays, first.steps, num_params=1)
    assert second.steps == 2
    for g in grads[2:]:
        second.step([(resumed, g)])
    np.testing.assert_array_equal(resumed, param)


def test_rmsprop_config_round_trips_through_make_optimizer():
    optimizer = make_optimizer("rmsprop", 0.02, weight_decay=1e-4, alpha=0.9, eps=1e-6)
    config = optimizer.config()
    assert config == {"name": "rmsprop", "lr": 0.02, "alpha": 0.9, "eps": 1e-6, "weight_decay": 1e-4}
    name = config.pop("name")
    rebuilt = make_optimizer(name, **config)
    assert type(rebuilt) is RMSprop and rebuilt.config() == optimizer.config()


def test_rmsprop_is_registered_with_its_formula_and_defaults():
    found = entry("optimizer", "RMSprop")
    assert found.target is RMSprop and nn.RMSprop is RMSprop
    assert "sqrt(v)" in found.formula
    assert {s.name: s.default for s in found.settings} == {"lr": 0.01, "alpha": 0.99, "eps": 1e-8,
                                                           "weight_decay": 0.0}
    assert RMSprop().config() == {"name": "rmsprop", "lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": 0}, r"rmsprop lr must be > 0"), ({"alpha": 1.0}, r"rmsprop alpha must be \[0, 1\), got 1.0"),
    ({"alpha": -0.1}, r"rmsprop alpha must be \[0, 1\)"), ({"eps": 0}, r"rmsprop eps must be > 0"),
    ({"weight_decay": -1}, r"rmsprop weight_decay must be >= 0"),
])
def test_rmsprop_rejects_settings_outside_their_ranges(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RMSprop(**kwargs)
