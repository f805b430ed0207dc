"""The gradient checker itself: it measures what it claims and it catches broken gradients."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.nn import Dense, Layer, ReLU, Sequential, SoftmaxCrossEntropy
from digitnet.nn.gradcheck import check_layer, check_loss, check_model, numeric_gradient, relative_error


def test_relative_error_values():
    a = np.array([3.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, -a) == pytest.approx(1.0)                  # ||2a|| / (2 ||a||)
    assert relative_error(a, 1.01 * a) == pytest.approx(0.01 / 2.01)
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0


def test_numeric_gradient_of_a_known_function(rng):
    a = rng.standard_normal((3, 4))
    numeric = numeric_gradient(lambda: float(np.sum(a ** 3)), a)
    np.testing.assert_allclose(numeric, 3 * a ** 2, rtol=1e-8, atol=1e-9)
    assert numeric.dtype == np.float64


def test_numeric_gradient_restores_the_array(rng):
    a = rng.standard_normal(5)
    before = a.copy()
    numeric_gradient(lambda: float(np.sum(np.sin(a))), a)
    np.testing.assert_array_equal(a, before)


def test_numeric_gradient_refuses_arrays_it_could_not_perturb(rng):
    a = rng.standard_normal((4, 4)).T                                   # not C-contiguous
    with pytest.raises(ValueError, match="contiguous"):
        numeric_gradient(lambda: float(np.sum(a)), a)


class ForgetsTheSlope(Layer):
    """A broken layer: y = 2x but backward returns grad_out (drops the factor 2)."""

    def forward(self, x, training=False):
        return 2 * x


class DenseWithWrongBiasGrad(Dense):
    def backward(self, grad_out):
        grad_in = super().backward(grad_out)
        self.grads["bias"] *= 0.5
        return grad_in


class CrossEntropyWithoutMean(SoftmaxCrossEntropy):
    def backward(self):
        return super().backward() * 2                                    # pretends B = 1 for B = 2


def test_check_layer_catches_a_wrong_input_gradient(rng):
    assert check_layer(ForgetsTheSlope(), rng.standard_normal((2, 3)), rng)["input"] > 0.1


def test_check_layer_catches_a_wrong_parameter_gradient(rng):
    errors = check_layer(DenseWithWrongBiasGrad(3, 2, rng=rng), rng.standard_normal((4, 3)), rng)
    assert errors["bias"] > 0.1
    assert errors["weights"] < 1e-6 and errors["input"] < 1e-6


def test_check_loss_catches_a_wrong_gradient(rng):
    logits, labels = rng.standard_normal((2, 3)), np.array([0, 2])
    assert check_loss(SoftmaxCrossEntropy(), logits, labels) < 1e-6
    assert check_loss(CrossEntropyWithoutMean(), logits, labels) > 0.1


def test_check_model_catches_a_wrong_layer_inside_a_model(rng):
    model = Sequential([Dense(4, 3, rng=rng), ReLU(), DenseWithWrongBiasGrad(3, 2, rng=rng)], input_shape=(4,))
    model.layers[0].params["bias"][...] = 0.1
    errors = check_model(model, SoftmaxCrossEntropy(), rng.standard_normal((3, 4)), np.array([0, 1, 1]))
    assert errors["layers.2.bias"] > 0.1
    assert errors["layers.0.weights"] < 1e-6


def test_check_layer_works_in_float64(rng):
    dense = Dense(3, 2, rng=rng)
    check_layer(dense, rng.standard_normal((2, 3)), rng)
    assert dense.params["weights"].dtype == np.float64 and dense.grads["weights"].dtype == np.float64
