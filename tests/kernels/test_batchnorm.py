"""FastBatchNorm: the formulas in float32 also far from zero (variance from centred values), running
statistics updated in place (shared with the reference model), the skipped input gradient."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.kernels import fast_twin
from digitnet.kernels.batchnorm import FastBatchNorm
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.gradcheck import check_layer
from tests.nn.test_batchnorm import _float64_reference, random_batchnorm


def fast_batchnorm(features, rng) -> FastBatchNorm:
    layer = fast_twin(random_batchnorm(features, rng))
    assert type(layer) is FastBatchNorm
    return layer


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5)])
def test_gradients_match_finite_differences(shape, rng):
    errors = check_layer(fast_batchnorm(shape[1], rng), 2 * rng.standard_normal(shape) + 1, rng)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("shape", [(7, 3, 6, 6), (9, 5)])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_training_matches_a_float64_reference(shape, offset, rng):
    """Outputs and gradients in float32 match the formulas in float64, also when the mean is 1000
    times the spread (the variance is an einsum over centred values: no cancellation)."""
    layer = fast_batchnorm(shape[1], rng)
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    grad = rng.standard_normal(shape).astype(np.float32)
    expected_y, expected_dx, expected_dgamma, expected_dbeta = _float64_reference(layer, x, grad)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, expected_y, atol=2e-4 if offset else 2e-5)
    np.testing.assert_allclose(layer.backward(grad.copy()), expected_dx, atol=2e-4 if offset else 2e-5)
    np.testing.assert_allclose(layer.grads["gamma"], expected_dgamma, rtol=1e-4, atol=2e-3 if offset else 1e-4)
    np.testing.assert_allclose(layer.grads["beta"], expected_dbeta, rtol=1e-5, atol=1e-4)


def test_running_statistics_and_gradients_are_updated_in_place(rng):
    reference = BatchNorm(2, momentum=0.1)
    layer = fast_twin(reference)
    arrays = {**{k: v for k, v in layer.buffers.items()}, **{f"grad_{k}": v for k, v in layer.grads.items()}}
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 2 + 3
    layer.forward(x, training=True)
    layer.backward(rng.standard_normal(x.shape).astype(np.float32))
    assert layer.buffers["running_mean"] is arrays["running_mean"]
    assert layer.buffers["running_var"] is arrays["running_var"]
    assert layer.grads["gamma"] is arrays["grad_gamma"] and layer.grads["beta"] is arrays["grad_beta"]
    n = 4 * 3 * 3
    np.testing.assert_allclose(reference.buffers["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(reference.buffers["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * n / (n - 1),
                               rtol=1e-5)
    assert reference.buffers["running_var"].dtype == np.float32


def test_inference_uses_the_running_statistics_and_forgets_the_training_batch(rng):
    layer = fast_batchnorm(3, rng)
    layer.buffers["running_mean"][...] = [1, -1, 0.5]
    layer.buffers["running_var"][...] = [4, 1, 0.25]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    layer.forward(x, training=True)
    layer.buffers["running_mean"][...] = [1, -1, 0.5]
    layer.buffers["running_var"][...] = [4, 1, 0.25]
    y = layer.forward(x, training=False)
    expected = (layer.params["gamma"] * (x - [1, -1, 0.5]) / np.sqrt(np.array([4, 1, 0.25]) + 1e-5)
                + layer.params["beta"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert y is not layer.forward(x, training=False)               # inference outputs are fresh
    with pytest.raises(RuntimeError):
        layer.backward(np.ones_like(y))                            # the inference pass dropped the batch


def test_skipping_the_input_gradient_still_fills_the_parameter_gradients(rng):
    layer = fast_batchnorm(3, rng)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    grad = rng.standard_normal((6, 3)).astype(np.float32)
    layer.forward(x, training=True)
    assert layer.backward(grad.copy()) is not None
    expected = {k: g.copy() for k, g in layer.grads.items()}
    layer.compute_input_grad = False
    layer.forward(x, training=True)
    assert layer.backward(grad.copy()) is None
    for key in expected:
        np.testing.assert_array_equal(layer.grads[key], expected[key])


def test_training_output_and_input_gradient_are_reused_buffers(rng):
    layer = fast_batchnorm(3, rng)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = layer.forward(x, training=True)
    assert layer.forward(x, training=True) is y
    grad = np.ones((6, 3), dtype=np.float32)
    assert np.shares_memory(layer.backward(grad), layer.backward(grad))   # views of one work buffer
    layer.release_buffers()
    assert layer._x_hat is None and layer._work == {}
