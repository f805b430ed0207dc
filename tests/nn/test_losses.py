"""Losses: hand-computed values, gradients vs finite differences, label smoothing, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet.errors import ConfigError, DataError
from digitnet.nn import MeanSquaredError, SoftmaxCrossEntropy, make_loss
from digitnet.nn.gradcheck import check_loss

TOLERANCE = 1e-6


def test_cross_entropy_value_by_hand():
    # row 0: logits (1, 2, 3), label 2 -> -log(e^3 / (e + e^2 + e^3))
    # row 1: logits (0, 0, 0), label 0 -> -log(1/3)
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = (-(3 - math.log(math.e + math.e ** 2 + math.e ** 3)) + math.log(3)) / 2
    assert SoftmaxCrossEntropy().forward(logits, np.array([2, 0])) == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_gradient_is_p_minus_onehot_over_batch():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, np.array([2, 0]))
    e = np.exp([1.0, 2.0, 3.0])
    p0 = e / e.sum()
    expected = np.array([p0 - [0, 0, 1], np.full(3, 1 / 3) - [1, 0, 0]]) / 2
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_gradient_matches_finite_differences(smoothing, rng):
    logits = 3 * rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    assert check_loss(SoftmaxCrossEntropy(label_smoothing=smoothing), logits, labels) < TOLERANCE


def test_label_smoothing_value_and_gradient_use_the_smoothed_targets(rng):
    eps, classes = 0.1, 4
    logits = rng.standard_normal((3, classes))
    labels = np.array([0, 3, 1])
    targets = np.full((3, classes), eps / classes)
    targets[np.arange(3), labels] += 1 - eps                # q = (1 - eps) onehot + eps / K
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    assert loss.forward(logits, labels) == pytest.approx(-(targets * log_p).sum() / 3, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (np.exp(log_p) - targets) / 3, rtol=1e-12, atol=1e-15)


def test_label_smoothing_changes_the_gradient_towards_the_other_classes():
    logits = np.array([[0.0, 0.0]])
    plain, smooth = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.2)
    plain.forward(logits, np.array([0]))
    smooth.forward(logits, np.array([0]))
    np.testing.assert_allclose(plain.backward(), [[-0.5, 0.5]])         # p - onehot = (0.5-1, 0.5)
    np.testing.assert_allclose(smooth.backward(), [[-0.4, 0.4]])        # q = (0.9, 0.1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 1])
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    plain = SoftmaxCrossEntropy()
    # exp(-2e4) underflows to exactly 0, which is the right answer, so only underflow may happen
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        value = plain.forward(logits, labels)
        grad = plain.backward()
        smooth_value = loss.forward(logits, labels)
        smooth_grad = loss.backward()
    assert math.isfinite(value) and math.isfinite(smooth_value)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(smooth_grad))
    # row 0 is right with a huge margin (loss 0), row 1 wrong by 2e4, row 2 a tie (log 2)
    assert value == pytest.approx((0 + 2e4 + math.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(grad[1], [-1 / 3, 1 / 3, 0], atol=1e-7)           # (p - onehot) / B
    assert grad.dtype == dtype


def test_cross_entropy_does_not_modify_its_input(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    before = logits.copy()
    SoftmaxCrossEntropy(label_smoothing=0.1).forward(logits, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(logits, before)


def test_mse_value_and_gradient_by_hand():
    outputs = np.array([[0.5, 0.25, 0.0], [1.0, 0.0, 0.5]])
    labels = np.array([0, 2])
    # diffs: (-0.5, 0.25, 0) and (1, 0, -0.5); L = (0.3125 + 1.25) / (2 * 2)
    loss = MeanSquaredError()
    assert loss.forward(outputs, labels) == pytest.approx(0.390625, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), [[-0.25, 0.125, 0], [0.5, 0, -0.25]], rtol=1e-12)
    np.testing.assert_array_equal(outputs, [[0.5, 0.25, 0.0], [1.0, 0.0, 0.5]])   # input untouched


def test_mse_gradient_matches_finite_differences(rng):
    outputs = rng.random((5, 4))
    assert check_loss(MeanSquaredError(), outputs, rng.integers(0, 4, 5)) < TOLERANCE


def test_losses_keep_float32():
    outputs = np.zeros((2, 3), dtype=np.float32)
    for loss in (SoftmaxCrossEntropy(), MeanSquaredError()):
        loss.forward(outputs, np.array([0, 1], dtype=np.uint8))
        assert loss.backward().dtype == np.float32


@pytest.mark.parametrize("labels", [np.array([0, 3]), np.array([-1, 0]), np.array([0.0, 1.0]),
                                    np.array([0, 1, 2])])
def test_bad_labels_raise_data_error(labels):
    with pytest.raises(DataError, match="labels"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), labels)
    with pytest.raises(DataError, match="labels"):
        MeanSquaredError().forward(np.zeros((2, 3)), labels)


def test_make_loss_by_name():
    assert isinstance(make_loss("cross_entropy"), SoftmaxCrossEntropy)
    assert isinstance(make_loss("CE"), SoftmaxCrossEntropy)
    assert make_loss("cross-entropy", label_smoothing=0.1).label_smoothing == 0.1
    assert isinstance(make_loss("mse"), MeanSquaredError)
    assert make_loss("ce", 0.1).config() == {"name": "cross_entropy", "label_smoothing": 0.1}


@pytest.mark.parametrize(("name", "smoothing"), [("hinge", 0.0), ("mse", 0.1), ("ce", 1.0), ("ce", -0.1)])
def test_make_loss_rejects_bad_requests(name, smoothing):
    with pytest.raises(ConfigError):
        make_loss(name, label_smoothing=smoothing)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.uint32, np.int64, np.uint64])
def test_cross_entropy_takes_labels_of_any_integer_type(dtype):
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    reference = SoftmaxCrossEntropy()
    expected = reference.forward(logits, np.array([0, 1, 2]))
    loss = SoftmaxCrossEntropy()
    assert loss.forward(logits, np.array([0, 1, 2], dtype=dtype)) == expected
    np.testing.assert_array_equal(loss.backward(), reference.backward())
