"""FastDense and FastDropout: products written into reused arrays, in-place gradients, the skipped input
gradient, masks built in place."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.kernels import fast_twin
from digitnet.kernels.dense import FastDense, FastDropout
from digitnet.nn import Dense, Dropout
from digitnet.nn.gradcheck import check_layer


def test_dense_backward_matches_its_formulas_and_writes_into_the_gradient_arrays(rng):
    dense = fast_twin(Dense(4, 3, rng=rng))
    assert type(dense) is FastDense
    x = rng.standard_normal((5, 4)).astype(np.float32)
    grad_out = rng.standard_normal((5, 3)).astype(np.float32)
    dense.forward(x, training=True)
    weights_grad_array, bias_grad_array = dense.grads["weights"], dense.grads["bias"]
    grad_in = dense.backward(grad_out)
    np.testing.assert_allclose(dense.grads["weights"], x.T @ grad_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.grads["bias"], grad_out.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_in, grad_out @ dense.params["weights"].T, rtol=1e-5, atol=1e-6)
    assert dense.grads["weights"] is weights_grad_array          # overwritten in place, never replaced
    assert dense.grads["bias"] is bias_grad_array


def test_dense_gradients_match_finite_differences(rng):
    errors = check_layer(fast_twin(Dense(5, 4, rng=rng)), rng.standard_normal((3, 5)), rng)
    assert max(errors.values()) < 1e-6, errors


def test_dense_skips_the_input_gradient_when_asked(rng):
    dense = fast_twin(Dense(3, 2, rng=rng))
    dense.compute_input_grad = False
    dense.forward(rng.standard_normal((4, 3)).astype(np.float32), training=True)
    assert dense.backward(np.ones((4, 2), dtype=np.float32)) is None
    np.testing.assert_allclose(dense.grads["bias"], [4, 4])          # parameter grads still filled


def test_dense_outputs_and_input_gradients_are_reused_buffers_in_training(rng):
    dense = fast_twin(Dense(3, 2, rng=rng))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = dense.forward(x, training=True)
    assert dense.forward(x, training=True) is y
    grad = np.ones((4, 2), dtype=np.float32)
    assert dense.backward(grad) is dense.backward(grad)
    inference = dense.forward(x, training=False)
    assert inference is not y and inference is not dense.forward(x, training=False)


def test_dense_bias_gradient_for_a_new_batch_size(rng):
    """The vector of ones behind the bias gradient follows the batch size."""
    dense = fast_twin(Dense(3, 2, rng=rng))
    for batch in (4, 7, 4):
        dense.forward(rng.standard_normal((batch, 3)).astype(np.float32), training=True)
        dense.backward(np.ones((batch, 2), dtype=np.float32))
        np.testing.assert_allclose(dense.grads["bias"], [batch, batch])


def test_dense_takes_float64_inputs_with_float32_weights(rng):
    dense = fast_twin(Dense(3, 2, rng=rng))
    y = dense.forward(rng.standard_normal((2, 3)), training=True)
    assert y.dtype == np.float64
    expected = Dense.forward(dense, dense.x)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_dense_rejects_inputs_of_the_wrong_size():
    with pytest.raises(ConfigError, match="expects input"):
        fast_twin(Dense(3, 2)).forward(np.ones((4, 5), dtype=np.float32))


def test_dropout_uses_the_reference_random_stream(rng):
    """The same generator state gives the same mask as the reference (built in place here)."""
    x = np.ones((40, 30), dtype=np.float32)
    reference = Dropout(0.3, rng=np.random.default_rng(7))
    fast = fast_twin(Dropout(0.3, rng=np.random.default_rng(7)))
    assert type(fast) is FastDropout
    expected = reference.forward(x, training=True)
    y = fast.forward(x, training=True)
    np.testing.assert_array_equal(y == 0, expected == 0)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_dropout_mask_and_output_are_reused_buffers_and_backward_is_in_place(rng):
    dropout = fast_twin(Dropout(0.5, rng=rng))
    x = rng.standard_normal((6, 10)).astype(np.float32)
    y = dropout.forward(x, training=True)
    mask = dropout.mask
    assert dropout.forward(x, training=True) is y and dropout.mask is mask
    grad = np.ones_like(x)
    routed = dropout.backward(grad)
    assert routed is grad                                          # grad_out is overwritten
    np.testing.assert_array_equal(routed, mask)
    assert set(np.unique(mask)) <= {0.0, 2.0}


def test_dropout_inference_and_rate_zero_are_the_identity(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert fast_twin(Dropout(0.5, rng=rng)).forward(x, training=False) is x
    zero = fast_twin(Dropout(0.0, rng=rng))
    assert zero.forward(x, training=True) is x and zero.mask is None
    grad = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(zero.backward(grad), grad)


def test_dropout_with_a_fixed_mask_gradient_checks(rng):
    dropout = fast_twin(Dropout(0.4, rng=rng))
    dropout.fixed_mask = (rng.random((4, 6)) >= 0.4) / 0.6
    assert check_layer(dropout, rng.standard_normal((4, 6)), rng)["input"] < 1e-6
