"""Dropout (the reference): identity at inference, inverted scaling, masks, gradients, settings."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import Dropout
from digitnet.nn.gradcheck import check_layer

TOLERANCE = 1e-6


def test_dropout_in_inference_is_the_identity(rng):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    dropout = Dropout(0.5, rng=rng)
    y = dropout.forward(x, training=False)
    np.testing.assert_array_equal(y, x)
    assert dropout.mask is None
    np.testing.assert_array_equal(dropout.backward(x), x)        # no mask: the gradient passes through


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
    np.testing.assert_allclose(dropout.mask, mask, rtol=1e-6)          # the kept mask is public
    assert set(np.unique(np.round(grad, 5))) <= {0.0, 2.0}
    assert dropout.mask.dtype == np.float32


def test_dropout_backward_does_not_write_into_its_gradient(rng):
    dropout = Dropout(0.5, rng=rng)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    dropout.forward(x, training=True)
    grad = rng.standard_normal((6, 10)).astype(np.float32)
    before = grad.copy()
    result = dropout.backward(grad)
    np.testing.assert_array_equal(grad, before)
    assert np.any(result == 0) and not np.any(before == 0)


def test_dropout_masks_come_from_the_generator():
    x = np.ones((4, 50), dtype=np.float32)
    first = Dropout(0.5, rng=np.random.default_rng(3)).forward(x, training=True).copy()
    again = Dropout(0.5, rng=np.random.default_rng(3)).forward(x, training=True).copy()
    other = Dropout(0.5, rng=np.random.default_rng(4)).forward(x, training=True).copy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dropout_draws_a_new_mask_for_each_training_forward():
    dropout = Dropout(0.5, rng=np.random.default_rng(0))
    x = np.ones((4, 50), dtype=np.float32)
    first = dropout.forward(x, training=True).copy()
    second = dropout.forward(x, training=True)
    assert not np.array_equal(first, second)


def test_dropout_fixed_mask_is_used_as_given(rng):
    dropout = Dropout(0.5, rng=rng)
    mask = (rng.random((3, 4)) >= 0.5) * 2.0
    dropout.fixed_mask = mask
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(dropout.forward(x, training=True), x * mask)
    np.testing.assert_array_equal(dropout.forward(x, training=True), x * mask)   # the same every time


def test_dropout_gradient_with_a_fixed_mask_matches_finite_differences(rng):
    rate = 0.4
    dropout = Dropout(rate, rng=rng)
    dropout.fixed_mask = (rng.random((4, 6)) >= rate) / (1 - rate)
    errors = check_layer(dropout, rng.standard_normal((4, 6)), rng)
    assert errors["input"] < TOLERANCE


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rejects_rates_outside_0_1(rate):
    with pytest.raises(ConfigError, match=r"Dropout rate must be \[0, 1\)"):
        Dropout(rate)


def test_dropout_config_and_description():
    assert Dropout(0.25).config() == {"type": "Dropout", "rate": 0.25}
    assert Dropout(0.2).describe() == "rate 0.2"
    assert Dropout().rate == 0.5                                      # the registered default


def test_dropout_release_buffers_forgets_the_mask(rng):
    dropout = Dropout(0.5, rng=rng)
    dropout.forward(np.ones((2, 3), dtype=np.float32), training=True)
    assert dropout.mask is not None
    dropout.release_buffers()
    assert dropout.mask is None
