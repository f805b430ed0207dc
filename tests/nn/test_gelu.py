"""GELU (tanh approximation): values by hand and against the exact x * Phi(x), the limits, the gradient."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import digitnet.nn as nn
from digitnet.nn import Sequential, activation_layer
from digitnet.nn.gelu import GELU
from digitnet.nn.gradcheck import check_layer
from digitnet.nn.init import default_init


def exact_gelu(x: np.ndarray) -> np.ndarray:
    """``x * Phi(x)`` with the normal CDF from math.erf (the function the tanh form approximates)."""
    return np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in np.ravel(x)]).reshape(np.shape(x))


def tanh_gelu(x: float) -> float:
    """The tanh approximation written out in plain Python floats."""
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_of_zero_is_zero_with_slope_one_half():
    gelu = GELU()
    y = gelu.forward(np.zeros((1, 3)), training=True)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_allclose(gelu.backward(np.ones((1, 3))), 0.5, rtol=1e-15)   # dy/dx(0) = Phi(0)


def test_gelu_values_by_hand():
    x = np.array([[-3.0, -1.0, -0.5, 0.5, 1.0, 2.0]])
    expected = [tanh_gelu(v) for v in x[0]]
    np.testing.assert_allclose(GELU().forward(x), [expected], rtol=1e-14, atol=1e-16)
    # GELU(1) = 0.5 * (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.8411920...
    assert GELU().forward(np.array([[1.0]]))[0, 0] == pytest.approx(0.841192, abs=1e-6)


def test_gelu_is_close_to_x_times_the_normal_cdf():
    x = np.linspace(-6, 6, 241)[None, :]
    np.testing.assert_allclose(GELU().forward(x), exact_gelu(x), rtol=0, atol=5e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_is_x_for_large_x_and_zero_for_large_negative_x(dtype):
    x = np.array([[10.0, 30.0, 100.0, 1000.0, -10.0, -30.0, -100.0, -1000.0]], dtype=dtype)
    gelu = GELU()
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = gelu.forward(x, training=True)
        grad = gelu.backward(np.ones_like(x))
    assert y.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(y[0, :4], x[0, :4], rtol=1e-7)
    np.testing.assert_allclose(y[0, 4:], 0, atol=1e-20)
    np.testing.assert_allclose(grad[0, :4], 1, rtol=1e-7)                  # the identity's slope
    np.testing.assert_allclose(grad[0, 4:], 0, atol=1e-20)


def test_gelu_lets_some_gradient_through_for_small_negative_inputs():
    """Unlike ReLU: a unit slightly below zero still learns (and GELU dips below zero there)."""
    gelu = GELU()
    y = gelu.forward(np.array([[-0.5]]), training=True)
    assert -0.2 < y[0, 0] < 0
    assert gelu.backward(np.ones((1, 1)))[0, 0] > 0.1


def test_gelu_gradient_matches_finite_differences(rng):
    errors = check_layer(GELU(), 2 * rng.standard_normal((4, 7)), rng)
    assert errors["input"] < 1e-6, errors


def test_gelu_gradient_matches_finite_differences_in_a_conv_shaped_batch(rng):
    assert check_layer(GELU(), rng.standard_normal((2, 3, 4, 4)), rng)["input"] < 1e-6


def test_gelu_backward_is_its_derivative_formula(rng):
    x = rng.standard_normal((3, 5))
    grad_out = rng.standard_normal((3, 5))
    gelu = GELU()
    gelu.forward(x, training=True)
    t = np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))
    derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
    np.testing.assert_allclose(gelu.backward(grad_out), grad_out * derivative, rtol=1e-13)


def test_gelu_keeps_float32_and_never_writes_into_its_inputs(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    grad = rng.standard_normal((3, 4)).astype(np.float32)
    x_before, grad_before = x.copy(), grad.copy()
    gelu = GELU()
    y = gelu.forward(x, training=True)
    grad_in = gelu.backward(grad)
    assert y.dtype == np.float32 and grad_in.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(grad, grad_before)
    gelu.release_buffers()
    assert gelu.x is None and gelu.t is None


def test_gelu_is_registered_by_name_with_he_initialisation():
    assert nn.GELU is GELU
    assert type(activation_layer("GELU")) is GELU
    assert default_init("gelu") == "he"
    assert GELU().config() == {"type": "GELU"}
    model = Sequential.from_spec("6-4-3", "gelu")
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "GELU", "Dense"]
    assert model.layers[0].init == "he"
