"""Flatten (the reference): reshapes, gradient shape, shapes per sample, an empty batch."""

from __future__ import annotations

import numpy as np

from digitnet.nn import Flatten
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6


def test_flatten_reshapes_and_unflattens_the_gradient(rng):
    flatten = Flatten()
    x = rng.standard_normal((3, 2, 4, 5))
    y = flatten.forward(x, training=True)
    assert y.shape == (3, 40)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    grad = rng.standard_normal((3, 40))
    grad_in = flatten.backward(grad)
    assert grad_in.shape == (3, 2, 4, 5)
    np.testing.assert_array_equal(grad_in[2], grad[2].reshape(2, 4, 5))
    assert flatten.output_shape((1, 28, 28)) == (784,)
    assert flatten.output_shape((10,)) == (10,)


def test_flatten_gradient_matches_finite_differences(rng):
    assert check_layer(Flatten(), rng.standard_normal((2, 3, 4)), rng)["input"] < TOLERANCE


def test_flatten_handles_an_empty_batch():
    flatten = Flatten()
    assert flatten.forward(np.zeros((0, 1, 28, 28), dtype=np.float32), training=True).shape == (0, 784)
    assert flatten.backward(np.zeros((0, 784), dtype=np.float32)).shape == (0, 1, 28, 28)


def test_flatten_keeps_the_input_shape_until_released(rng):
    flatten = Flatten()
    flatten.forward(rng.standard_normal((2, 3, 4)), training=True)
    assert flatten.input_shape == (2, 3, 4)
    flatten.release_buffers()
    assert flatten.input_shape is None
    assert Flatten().config() == {"type": "Flatten"}
