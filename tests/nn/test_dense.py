"""Dense (the reference): values, gradients (vs finite differences in float64), the protocol, errors."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import Dense
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6


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
    grad_in = dense.backward(grad_out)
    np.testing.assert_allclose(dense.grads["weights"], x.T @ grad_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.grads["bias"], grad_out.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_in, grad_out @ dense.params["weights"].T, rtol=1e-5, atol=1e-6)


def test_dense_backward_puts_new_gradient_arrays_and_leaves_its_inputs_alone(rng):
    """The reference protocol: backward rebinds ``grads`` (read them after backward) and never writes
    into ``x`` or ``grad_out``."""
    dense = Dense(4, 3, rng=rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    grad_out = rng.standard_normal((5, 3)).astype(np.float32)
    x_before, grad_before = x.copy(), grad_out.copy()
    old_weights_grad = dense.grads["weights"]
    dense.forward(x, training=True)
    dense.backward(grad_out)
    assert dense.grads["weights"] is not old_weights_grad
    np.testing.assert_array_equal(old_weights_grad, 0)                 # the old array was not written
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(grad_out, grad_before)
    assert dense.x is x                                                # what forward kept for backward


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


def test_dense_parameters_and_gradients_are_float32(rng):
    dense = Dense(3, 2)
    assert all(a.dtype == np.float32 for a in (*dense.params.values(), *dense.grads.values()))
    dense.forward(rng.standard_normal((4, 3)).astype(np.float32), training=True)
    grad_in = dense.backward(np.ones((4, 2), dtype=np.float32))
    assert all(a.dtype == np.float32 for a in (grad_in, *dense.grads.values()))


def test_dense_computes_the_input_gradient_of_a_first_layer_too(rng):
    """The reference has no skipping: every backward returns dL/dx (the kernels may skip it)."""
    dense = Dense(3, 2, rng=rng)
    dense.forward(rng.standard_normal((4, 3)).astype(np.float32), training=True)
    grad_in = dense.backward(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_allclose(grad_in, np.tile(dense.params["weights"].sum(axis=1), (4, 1)), rtol=1e-6)
    np.testing.assert_allclose(dense.grads["bias"], [4, 4])


def test_dense_rejects_inputs_of_the_wrong_size():
    dense = Dense(3, 2)
    with pytest.raises(ConfigError, match="expects input"):
        dense.forward(np.ones((4, 5), dtype=np.float32))
    with pytest.raises(ConfigError, match="expects input"):
        dense.forward(np.ones(3, dtype=np.float32))
    with pytest.raises(ConfigError, match="expects 3 inputs"):
        dense.output_shape((5,))
    assert dense.output_shape((3,)) == (2,)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((0, 3), {}, r"Dense in_features must be >= 1, got 0"),
    ((3, -1), {}, r"Dense out_features must be >= 1, got -1"),
    ((3, 2.5), {}, r"Dense out_features must be a whole number"),
    ((3, 2), {"init": "ones"}, r"Dense init must be one of he, xavier, lecun, got 'ones'"),
])
def test_dense_rejects_bad_arguments_with_the_registry_message(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Dense(*args, **kwargs)


def test_dense_config_and_description():
    dense = Dense(784, 128, init="xavier")
    assert dense.config() == {"type": "Dense", "in_features": 784, "out_features": 128, "init": "xavier"}
    assert dense.describe() == "784->128 (xavier)"
    assert Dense(3, 2, init="He").init == "he"              # initialiser names are forgiving about case
