"""Activations (the reference): values, gradients vs finite differences (float64), numerical stability."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, activation_layer, softmax
from digitnet.nn.activations import Activation, activation_name, stable_sigmoid
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6


def away_from_zero(rng, shape, margin=0.1):
    """Random inputs with |x| >= margin, so finite differences never straddle a ReLU kink."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.1), LeakyReLU(0.0), Sigmoid(), Tanh(), Softmax()],
                         ids=["relu", "leaky_relu", "leaky_relu_0", "sigmoid", "tanh", "softmax"])
def test_activation_gradients_match_finite_differences(layer, rng):
    errors = check_layer(layer, away_from_zero(rng, (4, 7)), rng)
    assert errors["input"] < TOLERANCE, errors


def test_relu_values_and_derivative():
    relu = ReLU()
    x = np.array([[-2.0, -0.0, 0.0, 0.5, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(relu.forward(x, training=True), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_array_equal(relu.backward(np.full_like(x, 2.0)), [[0, 0, 0, 2, 2]])


def test_leaky_relu_values_and_derivative():
    leaky = LeakyReLU(slope=0.1)
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(leaky.forward(x, training=True), [[-0.2, -0.05, 0, 0.5, 3]], rtol=1e-6)
    np.testing.assert_allclose(leaky.backward(np.full_like(x, 2.0)), [[0.2, 0.2, 0.2, 2, 2]], rtol=1e-6)


def test_leaky_relu_with_slope_zero_is_relu(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    grad = rng.standard_normal((5, 6)).astype(np.float32)
    leaky, relu = LeakyReLU(0.0), ReLU()
    np.testing.assert_array_equal(leaky.forward(x, training=True), relu.forward(x, training=True))
    np.testing.assert_array_equal(leaky.backward(grad.copy()), relu.backward(grad.copy()))


@pytest.mark.parametrize("slope", [-0.01, 1.0, 2.0])
def test_leaky_relu_rejects_slopes_outside_0_1(slope):
    with pytest.raises(ConfigError, match=r"slope must be \[0, 1\)"):
        LeakyReLU(slope)


def test_sigmoid_and_tanh_values_and_derivatives():
    x = np.array([[-1.0, 0.0, 2.0]])
    sigmoid = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(Sigmoid().forward(x), sigmoid, rtol=1e-12)
    layer = Sigmoid()
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), sigmoid * (1 - sigmoid), rtol=1e-12)
    layer = Tanh()
    np.testing.assert_allclose(layer.forward(x, training=True), np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), 1 - np.tanh(x) ** 2, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_of_plus_minus_1000_is_exact_and_silent(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    layer = Sigmoid()
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x, training=True)
        grad = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(y, [[0, 0, 0.5, 1, 1]])
    np.testing.assert_array_equal(grad, [[0, 0, 0.25, 0, 0]])
    assert y.dtype == dtype


def test_stable_sigmoid_is_accurate_across_the_range():
    x = np.linspace(-30, 30, 601)
    exact = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
    np.testing.assert_allclose(stable_sigmoid(x), exact, rtol=0, atol=1e-15)


def test_stable_sigmoid_returns_a_new_array_and_keeps_float32():
    x = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    before = x.copy()
    y = stable_sigmoid(x)
    assert y is not x and y.dtype == np.float32
    np.testing.assert_array_equal(x, before)


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0], [-5e3, -5e3, -5e3]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = softmax(logits)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(probs[0], [1, 0, 0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(probs[1], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(probs[2], 1 / 3, rtol=1e-6)


def test_softmax_along_another_axis_and_leaves_its_input_alone():
    logits = np.array([[1.0, 5.0], [3.0, 5.0]])
    before = logits.copy()
    probs = softmax(logits, axis=0)
    np.testing.assert_allclose(probs.sum(axis=0), 1)
    np.testing.assert_allclose(probs[:, 1], 0.5)
    np.testing.assert_array_equal(logits, before)


def test_softmax_layer_backward_is_the_jacobian_vector_product(rng):
    x = rng.standard_normal((3, 4))
    layer = Softmax()
    y = layer.forward(x, training=True).copy()
    grad_out = rng.standard_normal((3, 4))
    grad_in = layer.backward(grad_out.copy())
    for row in range(3):
        jacobian = np.diag(y[row]) - np.outer(y[row], y[row])
        np.testing.assert_allclose(grad_in[row], jacobian @ grad_out[row], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layer_cls", [ReLU, Sigmoid, Tanh, Softmax])
def test_activations_keep_shape_and_float32(layer_cls, rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    layer = layer_cls()
    y = layer.forward(x, training=True)
    assert y.shape == x.shape and y.dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


def test_leaky_relu_keeps_float32():
    layer = LeakyReLU(0.1)
    x = np.array([[-1.0, 2.0]], dtype=np.float32)
    assert layer.forward(x, training=True).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


@pytest.mark.parametrize("layer_cls", [ReLU, lambda: LeakyReLU(0.1), Sigmoid, Tanh, Softmax],
                         ids=["relu", "leaky_relu", "sigmoid", "tanh", "softmax"])
def test_activations_never_write_into_their_inputs_or_gradients(layer_cls, rng):
    layer = layer_cls()
    x = rng.standard_normal((3, 5))
    grad = rng.standard_normal((3, 5))
    x_before, grad_before = x.copy(), grad.copy()
    y = layer.forward(x, training=True)
    grad_in = layer.backward(grad)
    assert y is not x and grad_in is not grad
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(grad, grad_before)


def test_outputs_are_not_overwritten_by_a_later_forward(rng):
    relu = ReLU()
    first = relu.forward(np.ones((2, 2), dtype=np.float32), training=False)
    relu.forward(np.full((2, 2), 5, dtype=np.float32), training=False)
    np.testing.assert_array_equal(first, 1)
    trained = relu.forward(np.ones((2, 2), dtype=np.float32), training=True)
    relu.forward(np.full((2, 2), 5, dtype=np.float32), training=True)
    np.testing.assert_array_equal(trained, 1)            # the reference has no reused buffers


def test_the_kept_output_is_public_and_released():
    relu = ReLU()
    y = relu.forward(np.array([[1.0, -1.0]]), training=True)
    assert isinstance(relu, Activation) and relu.y is y
    relu.release_buffers()
    assert relu.y is None


@pytest.mark.parametrize(("name", "cls"), [
    ("relu", ReLU), ("ReLU", ReLU), ("leaky_relu", LeakyReLU), ("leaky-relu", LeakyReLU),
    ("LeakyReLU", LeakyReLU), ("sigmoid", Sigmoid), ("TANH", Tanh), ("softmax", Softmax),
])
def test_activation_layer_by_name(name, cls):
    assert type(activation_layer(name)) is cls


def test_activation_name_is_the_registered_name():
    assert activation_name("Leaky-ReLU") == "leaky_relu"
    assert activation_name("leakyrelu") == "leaky_relu"
    assert activation_name("GELU") == "gelu"


def test_unknown_activation_raises_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match=r"unknown activation 'swish' \(choose from relu, .*gelu"):
        activation_layer("swish")
    with pytest.raises(ConfigError):
        activation_name("")


def test_leaky_relu_config_and_description():
    assert LeakyReLU(0.2).config() == {"type": "LeakyReLU", "slope": 0.2}
    assert LeakyReLU(0.1).describe() == "slope 0.1"
    assert LeakyReLU().slope == 0.01
    assert ReLU().describe() == "" and ReLU().config() == {"type": "ReLU"}
