"""FastSoftmaxCrossEntropy: the reference's values in one reused [B, K] array, both reductions, the
exponent floor (no subnormal numbers), any integer labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet.errors import DataError
from digitnet.kernels import fast_twin
from digitnet.kernels.losses import FastSoftmaxCrossEntropy
from digitnet.nn import MeanSquaredError, SoftmaxCrossEntropy
from digitnet.nn.gradcheck import check_loss


def fast(label_smoothing=0.0, reduction="mean") -> FastSoftmaxCrossEntropy:
    loss = fast_twin(SoftmaxCrossEntropy(label_smoothing, reduction))
    assert type(loss) is FastSoftmaxCrossEntropy
    return loss


def test_cross_entropy_value_and_gradient_by_hand():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = (-(3 - math.log(math.e + math.e ** 2 + math.e ** 3)) + math.log(3)) / 2
    loss = fast()
    assert loss.forward(logits, np.array([2, 0])) == pytest.approx(expected, rel=1e-12)
    e = np.exp([1.0, 2.0, 3.0])
    grad = np.array([e / e.sum() - [0, 0, 1], np.full(3, 1 / 3) - [1, 0, 0]]) / 2
    np.testing.assert_allclose(loss.backward(), grad, rtol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_matches_finite_differences(smoothing, reduction, rng):
    logits = 3 * rng.standard_normal((5, 4))
    assert check_loss(fast(smoothing, reduction), logits, rng.integers(0, 4, 5)) < 1e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_summed_loss_and_gradient_are_batch_times_the_mean(smoothing, rng):
    logits = rng.standard_normal((9, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 9)
    mean, total = fast(smoothing, "mean"), fast(smoothing, "sum")
    assert total.forward(logits, labels) == pytest.approx(9 * mean.forward(logits, labels), rel=1e-6)
    np.testing.assert_allclose(total.backward(), 9 * mean.backward(), rtol=1e-5, atol=1e-7)


def test_the_gradient_is_one_reused_array_and_the_logits_are_left_alone(rng):
    loss = fast(0.1)
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    before = logits.copy()
    loss.forward(logits, np.array([0, 1, 2, 0]))
    first = loss.backward()
    kept = first.copy()
    loss.forward(2 * logits, np.array([1, 1, 1, 1]))
    assert loss.backward() is first                           # valid until the next forward ...
    assert not np.array_equal(first, kept)                    # ... which overwrote it
    np.testing.assert_array_equal(logits, before)
    loss.forward(rng.standard_normal((6, 3)).astype(np.float32), np.zeros(6, dtype=np.int64))
    assert loss.backward().shape == (6, 3)                    # a new batch shape gets new arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_give_finite_values_without_subnormals(dtype):
    """The exponent floor at log(sqrt(tiny)): not even an underflow, and no subnormal in the gradient."""
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 1])
    loss = fast()
    with np.errstate(all="raise"):
        value = loss.forward(logits, labels)
        grad = loss.backward()
    assert value == pytest.approx((0 + 2e4 + math.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(grad[1], [-1 / 3, 1 / 3, 0], atol=1e-7)
    tiny = np.finfo(dtype).tiny
    assert np.all((grad == 0) | (np.abs(grad) >= tiny))
    assert grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.uint32, np.int64, np.uint64])
def test_labels_of_any_integer_type(dtype):
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    reference = SoftmaxCrossEntropy()
    expected = reference.forward(logits, np.array([0, 1, 2]))
    loss = fast()
    assert loss.forward(logits, np.array([0, 1, 2], dtype=dtype)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(loss.backward(), reference.backward(), rtol=1e-6, atol=1e-8)


def test_bad_labels_raise_data_error():
    with pytest.raises(DataError, match="labels"):
        fast().forward(np.zeros((2, 3), dtype=np.float32), np.array([0, 3]))


def test_the_kernel_keeps_the_reference_settings():
    reference = SoftmaxCrossEntropy(0.1, "sum")
    loss = fast_twin(reference)
    assert loss.config() == reference.config() == {"name": "cross_entropy", "label_smoothing": 0.1,
                                                   "reduction": "sum"}
    mse = MeanSquaredError()
    assert fast_twin(mse) is mse                              # no kernel: used as it is


def test_the_kernels_label_check_accepts_and_refuses_what_the_reference_does():
    from digitnet.errors import DataError
    from digitnet.kernels.losses import check_labels
    from digitnet.nn.losses import check_batch

    outputs = np.zeros((3, 4), np.float32)
    for labels in (np.array([0, 3, 2], np.uint8), np.array([0, 3, 2], np.int64), np.zeros(0, np.uint8)):
        expected = check_batch(outputs[:len(labels)], labels)
        np.testing.assert_array_equal(check_labels(outputs[:len(labels)], labels), expected)
    for labels in (np.array([0, 4, 2], np.uint8), np.array([0, -1, 2]), np.array([0, 1], np.uint8)):
        with pytest.raises(DataError) as reference:
            check_batch(outputs, labels)
        with pytest.raises(DataError, match=str(reference.value).replace("[", r"\[")):
            check_labels(outputs, labels)
