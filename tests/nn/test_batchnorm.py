"""BatchNorm (the reference) on [B, F] and [B, C, H, W]: normalisation, running statistics, inference,
gradients, settings."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import layer_from_config
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6
SHAPES = [(6, 4), (3, 2, 4, 5)]


def random_batchnorm(features, rng):
    layer = BatchNorm(features)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, features)
    layer.params["beta"][...] = rng.standard_normal(features)
    return layer


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_finite_differences(shape, rng):
    layer = random_batchnorm(shape[1], rng)
    x = 2 * rng.standard_normal(shape) + 1
    errors = check_layer(layer, x, rng)
    assert set(errors) == {"input", "gamma", "beta"}
    for name, error in errors.items():
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("shape", SHAPES)
def test_training_output_has_zero_mean_and_unit_variance_per_feature(shape, rng):
    x = (3 * rng.standard_normal(shape) + 5).astype(np.float32)
    y = BatchNorm(shape[1]).forward(x, training=True)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=axes), 1, atol=1e-3)


def test_gamma_and_beta_scale_and_shift(rng):
    layer = random_batchnorm(3, rng)
    x = rng.standard_normal((8, 3, 2, 2)).astype(np.float32)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), layer.params["beta"], atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), layer.params["gamma"], rtol=1e-3)


def test_running_statistics_follow_pytorch_convention(rng):
    layer = BatchNorm(2, momentum=0.1)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 2 + 3
    layer.forward(x, training=True)
    n = 4 * 3 * 3
    batch_mean = x.mean(axis=(0, 2, 3))
    batch_var_unbiased = x.var(axis=(0, 2, 3)) * n / (n - 1)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.9 * 0 + 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 * 1 + 0.1 * batch_var_unbiased, rtol=1e-5)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.19 * batch_mean, rtol=1e-5)


def test_inference_uses_the_running_statistics_and_does_not_update_them(rng):
    layer = random_batchnorm(3, rng)
    layer.buffers["running_mean"][...] = [1, -1, 0.5]
    layer.buffers["running_var"][...] = [4, 1, 0.25]
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = layer.forward(x, training=False)
    expected = (layer.params["gamma"] * (x - [1, -1, 0.5]) / np.sqrt(np.array([4, 1, 0.25]) + 1e-5)
                + layer.params["beta"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.buffers["running_mean"], np.float32([1, -1, 0.5]))
    # a single sample is fine at inference (no batch statistics needed)
    assert layer.forward(x[:1]).shape == (1, 3)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones_like(y))


def test_backward_matches_the_closed_form(rng):
    layer = random_batchnorm(4, rng)
    x = rng.standard_normal((10, 4))
    layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
    y = layer.forward(x, training=True)
    grad_out = rng.standard_normal(y.shape)
    grad = layer.backward(grad_out.copy())
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(layer.grads["beta"], grad_out.sum(0), rtol=1e-5)
    np.testing.assert_allclose(layer.grads["gamma"], (grad_out * x_hat).sum(0), rtol=1e-5)
    expected = layer.params["gamma"] / np.sqrt(x.var(0) + 1e-5) * (
        grad_out - grad_out.mean(0) - x_hat * (grad_out * x_hat).mean(0))
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)
    # the input gradient of a normalisation sums to zero per feature (shifting x changes nothing)
    np.testing.assert_allclose(grad.sum(0), 0, atol=1e-10)


def test_shapes_buffers_and_errors():
    layer = BatchNorm(32)
    assert layer.output_shape((32, 14, 14)) == (32, 14, 14)
    assert layer.output_shape((32,)) == (32,)
    assert set(layer.buffers) == {"running_mean", "running_var"}
    assert layer.num_params() == 64
    with pytest.raises(ConfigError):
        layer.output_shape((16, 14, 14))
    with pytest.raises(ConfigError):
        layer.forward(np.zeros((2, 16), dtype=np.float32), training=True)
    for bad, message in (({"num_features": 0}, r"BatchNorm num_features must be >= 1"),
                         ({"num_features": 4, "momentum": 1.5}, r"BatchNorm momentum must be \[0, 1\], got 1.5"),
                         ({"num_features": 4, "eps": 0}, r"BatchNorm eps must be > 0, got 0")):
        with pytest.raises(ConfigError, match=message):
            BatchNorm(**bad)


def test_config_round_trip():
    layer = BatchNorm(16, momentum=0.05, eps=1e-3)
    assert layer.config() == {"type": "BatchNorm", "num_features": 16, "momentum": 0.05, "eps": 1e-3}
    rebuilt = layer_from_config(layer.config())
    assert isinstance(rebuilt, BatchNorm) and rebuilt.config() == layer.config()


def _float64_reference(layer: BatchNorm, x: np.ndarray, grad: np.ndarray):
    """y, dL/dx, dL/dgamma, dL/dbeta by the module docstring's formulas, in float64 on the whole batch."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    x64, g64 = x.astype(np.float64), grad.astype(np.float64)
    gamma = layer.params["gamma"].astype(np.float64).reshape(shape)
    beta = layer.params["beta"].astype(np.float64).reshape(shape)
    count = x.size // x.shape[1]
    mean = x64.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(x64.var(axis=axes, keepdims=True) + layer.eps)
    x_hat = (x64 - mean) * inv_std
    grad_beta, grad_gamma = g64.sum(axis=axes), (g64 * x_hat).sum(axis=axes)
    grad_x = gamma * inv_std * (g64 - grad_beta.reshape(shape) / count - x_hat * grad_gamma.reshape(shape) / count)
    return gamma * x_hat + beta, grad_x, grad_gamma, grad_beta


@pytest.mark.parametrize("shape", [(7, 3, 6, 6), (9, 5)])
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_training_matches_a_float64_reference(shape, offset, rng):
    """Outputs and gradients in float32 match the formulas in float64, also when the mean is 1000
    times the spread (the variance is computed from centred values: no cancellation)."""
    layer = random_batchnorm(shape[1], rng)
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    grad = rng.standard_normal(shape).astype(np.float32)
    expected_y, expected_dx, expected_dgamma, expected_dbeta = _float64_reference(layer, x, grad)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, expected_y, atol=2e-4 if offset else 2e-5)
    np.testing.assert_allclose(layer.backward(grad.copy()), expected_dx, atol=2e-4 if offset else 2e-5)
    np.testing.assert_allclose(layer.grads["gamma"], expected_dgamma, rtol=1e-4, atol=2e-3 if offset else 1e-4)
    np.testing.assert_allclose(layer.grads["beta"], expected_dbeta, rtol=1e-5, atol=1e-4)


def test_backward_before_any_training_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward"):
        BatchNorm(3).backward(np.ones((2, 3), dtype=np.float32))


def test_forward_keeps_x_hat_and_inv_std_and_release_buffers_forgets_them(rng):
    layer = BatchNorm(3)
    x = rng.standard_normal((6, 3))
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.inv_std, 1 / np.sqrt(x.var(axis=0) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(layer.x_hat[:, :, 0], (x - x.mean(axis=0)) * layer.inv_std, rtol=1e-12)
    layer.release_buffers()
    assert layer.x_hat is None and layer.inv_std is None
    assert set(layer.buffers) == {"running_mean", "running_var"}          # state, not cache: kept


def test_momentum_zero_freezes_and_momentum_one_replaces_the_running_statistics(rng):
    x = (rng.standard_normal((10, 2)) * 3 + 1).astype(np.float32)
    frozen, replaced = BatchNorm(2, momentum=0.0), BatchNorm(2, momentum=1.0)
    frozen.forward(x, training=True)
    replaced.forward(x, training=True)
    np.testing.assert_array_equal(frozen.buffers["running_mean"], 0)
    np.testing.assert_array_equal(frozen.buffers["running_var"], 1)
    np.testing.assert_allclose(replaced.buffers["running_mean"], x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(replaced.buffers["running_var"], x.var(axis=0, ddof=1), rtol=1e-5)
    assert replaced.buffers["running_var"].dtype == np.float32


def test_a_single_value_per_feature_trains_without_dividing_by_zero():
    """B = 1 on [B, F]: n = 1, the batch is all mean; the unbiased variance uses max(n - 1, 1)."""
    layer = BatchNorm(2)
    with np.errstate(all="raise"):
        y = layer.forward(np.array([[3.0, -1.0]]), training=True)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9, rtol=1e-6)    # 0.9 * 1 + 0.1 * 0
