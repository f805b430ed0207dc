"""Dense, Dropout and Flatten: values, gradients (vs finite differences in float64), edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import Dense, Dropout, Flatten
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6


# -- Dense -------------------------------------------------------------------------------------
def test_dense_forward_is_x_times_weights_plus_bias():
    dense = Dense(2, 3)
    dense.params["weights"][...] = [[1, 2, 3], [4, 5, 6]]
    dense.params["bias"][...] = [0.5, -0.5, 1]
    x = np.array([[1, 1], [2, -1]], dtype=np.float32)
    y = dense.forward(x)
    np.testing.assert_allclose(y, [[5.5, 6.5, 10], [-1.5, -1.5, 1]])
    assert y.dtype == np.float32


def test_dense_backward_matches_its_formulas(rng):
    dense = Dense(4, 3, rng=rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    grad_out = rng.standard_normal((5, 3)).astype(np.float32)
    dense.forward(x, training=True)
    weights_grad_array = dense.grads["weights"]
    grad_in = dense.backward(grad_out)
    np.testing.assert_allclose(dense.grads["weights"], x.T @ grad_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.grads["bias"], grad_out.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_in, grad_out @ dense.params["weights"].T, rtol=1e-5, atol=1e-6)
    assert dense.grads["weights"] is weights_grad_array          # overwritten in place, never replaced


@pytest.mark.parametrize("init", ["he", "xavier", "lecun"])
def test_dense_gradients_match_finite_differences(init, rng):
    errors = check_layer(Dense(5, 4, init=init, rng=rng), rng.standard_normal((3, 5)), rng)
    assert set(errors) == {"input", "weights", "bias"}
    assert max(errors.values()) < TOLERANCE, errors


def test_dense_init_is_selectable_and_recorded_in_its_config(rng):
    he = Dense(300, 200, init="he", rng=rng)
    xavier = Dense(300, 200, init="xavier", rng=rng)
    assert he.params["weights"].std() == pytest.approx(np.sqrt(2 / 300), rel=0.03)
    assert np.abs(xavier.params["weights"]).max() <= np.sqrt(6 / 500)
    assert xavier.config()["init"] == "xavier"
    np.testing.assert_array_equal(he.params["bias"], 0)


def test_dense_parameters_and_gradients_are_float32():
    dense = Dense(3, 2)
    assert all(a.dtype == np.float32 for a in (*dense.params.values(), *dense.grads.values()))


def test_dense_skips_the_input_gradient_when_asked(rng):
    dense = Dense(3, 2, rng=rng)
    dense.compute_input_grad = False
    dense.forward(rng.standard_normal((4, 3)).astype(np.float32), training=True)
    assert dense.backward(np.ones((4, 2), dtype=np.float32)) is None
    np.testing.assert_allclose(dense.grads["bias"], [4, 4])          # parameter grads still filled


def test_dense_rejects_inputs_of_the_wrong_size():
    dense = Dense(3, 2)
    with pytest.raises(ConfigError, match="expects input"):
        dense.forward(np.ones((4, 5), dtype=np.float32))
    with pytest.raises(ConfigError, match="expects 3 inputs"):
        dense.output_shape((5,))
    assert dense.output_shape((3,)) == (2,)


@pytest.mark.parametrize(("args", "kwargs"), [((0, 3), {}), ((3, -1), {}), ((3, 2), {"init": "ones"})])
def test_dense_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ConfigError):
        Dense(*args, **kwargs)


# -- Dropout -----------------------------------------------------------------------------------
def test_dropout_in_inference_is_the_identity(rng):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y = Dropout(0.5, rng=rng).forward(x, training=False)
    np.testing.assert_array_equal(y, x)


def test_dropout_rate_zero_is_the_identity_in_training_too(rng):
    dropout = Dropout(0.0, rng=rng)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_array_equal(dropout.forward(x, training=True), x)
    grad = rng.standard_normal((8, 16)).astype(np.float32)
    np.testing.assert_array_equal(dropout.backward(grad.copy()), grad)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_zeroes_about_rate_of_the_units_and_preserves_the_mean(rate):
    dropout = Dropout(rate, rng=np.random.default_rng(0))
    x = np.ones((1000, 200), dtype=np.float32)                       # 200,000 units
    y = dropout.forward(x, training=True)
    kept = y != 0
    # the fraction dropped is Binomial(n, rate)/n with std sqrt(rate(1-rate)/n) <= 0.0012
    assert 1 - kept.mean() == pytest.approx(rate, abs=0.006)
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)     # inverted: kept units scaled up
    assert y.mean() == pytest.approx(1.0, abs=0.03)                   # expectation unchanged


def test_dropout_backward_uses_the_forward_mask(rng):
    dropout = Dropout(0.5, rng=rng)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    y = dropout.forward(x, training=True).copy()
    mask = np.divide(y, x)
    grad = dropout.backward(np.ones_like(x))
    np.testing.assert_allclose(grad, mask, rtol=1e-6)
    assert set(np.unique(np.round(grad, 5))) <= {0.0, 2.0}


def test_dropout_masks_come_from_the_generator():
    x = np.ones((4, 50), dtype=np.float32)
    first = Dropout(0.5, rng=np.random.default_rng(3)).forward(x, training=True).copy()
    again = Dropout(0.5, rng=np.random.default_rng(3)).forward(x, training=True).copy()
    other = Dropout(0.5, rng=np.random.default_rng(4)).forward(x, training=True).copy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dropout_gradient_with_a_fixed_mask_matches_finite_differences(rng):
    rate = 0.4
    dropout = Dropout(rate, rng=rng)
    dropout.fixed_mask = (rng.random((4, 6)) >= rate) / (1 - rate)
    errors = check_layer(dropout, rng.standard_normal((4, 6)), rng)
    assert errors["input"] < TOLERANCE


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rejects_rates_outside_0_1(rate):
    with pytest.raises(ConfigError, match="dropout rate"):
        Dropout(rate)


# -- Flatten -----------------------------------------------------------------------------------
def test_flatten_reshapes_and_unflattens_the_gradient(rng):
    flatten = Flatten()
    x = rng.standard_normal((3, 2, 4, 5))
    y = flatten.forward(x, training=True)
    assert y.shape == (3, 40)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    assert flatten.backward(np.ones((3, 40))).shape == (3, 2, 4, 5)
    assert flatten.output_shape((1, 28, 28)) == (784,)


def test_flatten_gradient_matches_finite_differences(rng):
    assert check_layer(Flatten(), rng.standard_normal((2, 3, 4)), rng)["input"] < TOLERANCE


def test_flatten_handles_an_empty_batch():
    assert Flatten().forward(np.zeros((0, 1, 28, 28), dtype=np.float32)).shape == (0, 784)
