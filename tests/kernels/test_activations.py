"""The activation kernels: the reference values, computed in place (reused outputs, overwritten gradients)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from digitnet.kernels import KERNELS, fast_twin
from digitnet.kernels.activations import stable_sigmoid_into
from digitnet.nn import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from digitnet.nn.activations import stable_sigmoid
from digitnet.nn.gradcheck import check_layer

ACTIVATIONS = {"relu": ReLU, "leaky_relu": lambda: LeakyReLU(0.1), "sigmoid": Sigmoid, "tanh": Tanh,
               "softmax": Softmax}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_kernel_values_and_gradients_equal_the_reference(name, rng):
    reference, fast = ACTIVATIONS[name](), fast_twin(ACTIVATIONS[name]())
    assert type(fast) is KERNELS[type(reference)]
    x = rng.standard_normal((4, 7)).astype(np.float32)
    grad = rng.standard_normal((4, 7)).astype(np.float32)
    np.testing.assert_allclose(fast.forward(x, training=True), reference.forward(x, training=True), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(fast.backward(grad.copy()), reference.backward(grad.copy()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_kernel_gradients_match_finite_differences(name, rng):
    x = rng.standard_normal((4, 7))
    x = np.where(x >= 0, x + 0.1, x - 0.1)                    # away from the kink at 0
    assert check_layer(fast_twin(ACTIVATIONS[name]()), x, rng)["input"] < 1e-6


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_training_output_is_a_reused_buffer_and_backward_overwrites_grad_out(name, rng):
    layer = fast_twin(ACTIVATIONS[name]())
    x = rng.standard_normal((3, 5)).astype(np.float32)
    x_before = x.copy()
    y = layer.forward(x, training=True)
    assert layer.forward(x, training=True) is y and y is not x
    np.testing.assert_array_equal(x, x_before)                 # the input itself is never written
    grad = rng.standard_normal((3, 5)).astype(np.float32)
    assert layer.backward(grad) is grad                        # computed in place in grad_out
    assert y.dtype == np.float32 and grad.dtype == np.float32


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_inference_outputs_are_not_overwritten_by_a_later_forward(name, rng):
    layer = fast_twin(ACTIVATIONS[name]())
    first = layer.forward(np.ones((2, 3), dtype=np.float32), training=False)
    kept = first.copy()
    layer.forward(np.full((2, 3), 5, dtype=np.float32), training=False)
    layer.forward(np.full((2, 3), -5, dtype=np.float32), training=True)
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_of_plus_minus_1000_is_exact_and_silent(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    layer = fast_twin(Sigmoid())
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = layer.forward(x, training=True)
        grad = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(y, [[0, 0, 0.5, 1, 1]])
    np.testing.assert_array_equal(grad, [[0, 0, 0.25, 0, 0]])
    assert y.dtype == dtype


def test_stable_sigmoid_into_equals_the_reference_and_works_in_place(rng):
    x = rng.standard_normal(50) * 20
    expected = stable_sigmoid(x)
    out = np.empty_like(x)
    assert stable_sigmoid_into(x, out) is out
    np.testing.assert_array_equal(out, expected)
    assert stable_sigmoid_into(x, x) is x                      # out may be x
    np.testing.assert_array_equal(x, expected)


def test_leaky_relu_slope_zero_is_relu(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    grad = rng.standard_normal((5, 6)).astype(np.float32)
    leaky, relu = fast_twin(LeakyReLU(0.0)), fast_twin(ReLU())
    np.testing.assert_array_equal(leaky.forward(x, training=True), relu.forward(x, training=True))
    np.testing.assert_array_equal(leaky.backward(grad.copy()), relu.backward(grad.copy()))


def test_softmax_kernel_survives_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-5e3, -5e3, -5e3]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probs = fast_twin(Softmax()).forward(logits)
    np.testing.assert_allclose(probs, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)


def test_an_activation_without_a_kernel_is_used_as_it_is():
    from digitnet.nn.gelu import GELU

    gelu = GELU()
    assert fast_twin(gelu) is gelu
