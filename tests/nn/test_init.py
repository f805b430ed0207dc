"""Weight initialisation: the distributions have the variances their formulas promise."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn.init import default_init, init_weights

FAN_IN, FAN_OUT = 400, 300          # 120,000 draws: sample std within ~0.5% of the true one


def test_he_normal_has_variance_two_over_fan_in(rng):
    weights = init_weights((FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, "he", rng)
    assert weights.dtype == np.float32 and weights.shape == (FAN_IN, FAN_OUT)
    assert abs(weights.mean()) < 0.01 * np.sqrt(2 / FAN_IN)
    assert weights.std() == pytest.approx(np.sqrt(2 / FAN_IN), rel=0.02)


def test_xavier_uniform_stays_within_its_limit_and_has_the_uniform_variance(rng):
    limit = np.sqrt(6 / (FAN_IN + FAN_OUT))
    weights = init_weights((FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, "xavier", rng)
    assert weights.dtype == np.float32
    assert np.abs(weights).max() <= limit
    assert np.abs(weights).max() > 0.99 * limit                      # fills the interval
    # Var U(-a, a) = a^2 / 3 = 2 / (fan_in + fan_out): Glorot's target
    assert weights.var() == pytest.approx(2 / (FAN_IN + FAN_OUT), rel=0.03)


def test_lecun_normal_has_variance_one_over_fan_in(rng):
    weights = init_weights((FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, "lecun", rng)
    assert weights.std() == pytest.approx(np.sqrt(1 / FAN_IN), rel=0.02)


def test_same_seed_same_weights():
    first = init_weights((5, 4), 5, 4, "he", np.random.default_rng(3))
    second = init_weights((5, 4), 5, 4, "he", np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)


def test_unknown_scheme_raises_config_error_listing_the_registered_ones(rng):
    with pytest.raises(ConfigError, match=r"unknown initializer 'orthogonal' \(choose from he, xavier, lecun"):
        init_weights((2, 2), 2, 2, "orthogonal", rng)


def test_scheme_names_are_forgiving_about_case(rng):
    first = init_weights((5, 4), 5, 4, "He", np.random.default_rng(3))
    np.testing.assert_array_equal(first, init_weights((5, 4), 5, 4, "he", np.random.default_rng(3)))


@pytest.mark.parametrize(("activation", "scheme"), [
    ("relu", "he"), ("leaky_relu", "he"), ("sigmoid", "xavier"), ("tanh", "xavier"), ("gelu", "he"),
    ("softmax", "xavier"), ("Leaky-ReLU", "he"),
])
def test_default_init_matches_the_activation(activation, scheme):
    assert default_init(activation) == scheme


def test_default_init_of_an_unknown_activation_is_an_error():
    with pytest.raises(ConfigError, match="unknown activation"):
        default_init("swish")
