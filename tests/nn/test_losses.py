"""Losses (the reference): hand-computed values, gradients vs finite differences, label smoothing,
stability, and the two reductions (mean and sum)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet.errors import ConfigError, DataError
from digitnet.nn import SGD, MeanSquaredError, Sequential, SoftmaxCrossEntropy, make_loss
from digitnet.nn.gradcheck import check_loss
from digitnet.nn.losses import check_batch, one_hot

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
    assert make_loss("ce", 0.1).config() == {"name": "cross_entropy", "label_smoothing": 0.1, "reduction": "mean"}
    assert make_loss("mse", reduction="sum").config() == {"name": "mse", "reduction": "sum"}
    assert make_loss("mean_squared_error").name == "mse"
    assert make_loss("softmax_cross_entropy", reduction="sum").reduction == "sum"


@pytest.mark.parametrize(("name", "smoothing", "message"), [
    ("hinge", 0.0, r"unknown loss 'hinge' \(choose from cross_entropy, mse\)"),
    ("mse", 0.1, "label smoothing applies to cross-entropy only, not mse"),
    ("ce", 1.0, r"cross_entropy label_smoothing must be \[0, 1\), got 1.0"),
    ("ce", -0.1, r"cross_entropy label_smoothing must be \[0, 1\)"),
])
def test_make_loss_rejects_bad_requests(name, smoothing, message):
    with pytest.raises(ConfigError, match=message):
        make_loss(name, label_smoothing=smoothing)


@pytest.mark.parametrize("make", [lambda r: SoftmaxCrossEntropy(reduction=r), lambda r: MeanSquaredError(r),
                                  lambda r: make_loss("ce", reduction=r)], ids=["ce", "mse", "make_loss"])
@pytest.mark.parametrize("reduction", ["median", "Mean", "", None])
def test_a_reduction_other_than_mean_or_sum_is_rejected(make, reduction):
    with pytest.raises(ConfigError, match="reduction must be one of mean, sum"):
        make(reduction)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.uint32, np.int64, np.uint64])
def test_cross_entropy_takes_labels_of_any_integer_type(dtype):
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    reference = SoftmaxCrossEntropy()
    expected = reference.forward(logits, np.array([0, 1, 2]))
    loss = SoftmaxCrossEntropy()
    assert loss.forward(logits, np.array([0, 1, 2], dtype=dtype)) == expected
    np.testing.assert_array_equal(loss.backward(), reference.backward())


def test_backward_before_forward_is_an_error():
    for loss in (SoftmaxCrossEntropy(), MeanSquaredError()):
        with pytest.raises(RuntimeError, match="before forward"):
            loss.backward()


def test_check_batch_and_one_hot():
    assert check_batch(np.zeros((2, 3)), np.array([0, 2], dtype=np.uint64)).dtype == np.intp
    with pytest.raises(ConfigError, match="outputs \\[batch, classes\\]"):
        check_batch(np.zeros(3), np.array([0]))
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3, np.float32), [[0, 0, 1], [1, 0, 0]])


# -- reduction="sum" ------------------------------------------------------------------------------
LOSSES = {
    "cross_entropy": lambda reduction: SoftmaxCrossEntropy(reduction=reduction),
    "smoothed_cross_entropy": lambda reduction: SoftmaxCrossEntropy(label_smoothing=0.1, reduction=reduction),
    "mse": lambda reduction: MeanSquaredError(reduction=reduction),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("batch", [1, 7])
def test_the_summed_loss_and_its_gradient_are_batch_times_the_mean(name, batch, rng):
    outputs = rng.uniform(-2, 2, (batch, 5))
    labels = rng.integers(0, 5, batch)
    mean, total = LOSSES[name]("mean"), LOSSES[name]("sum")
    assert mean.scale(batch) == 1 / batch and total.scale(batch) == 1
    assert total.forward(outputs, labels) == pytest.approx(batch * mean.forward(outputs, labels), rel=1e-12)
    np.testing.assert_allclose(total.backward(), batch * mean.backward(), rtol=1e-12, atol=1e-15)


def test_summed_cross_entropy_by_hand():
    # the two per-sample losses of test_cross_entropy_value_by_hand, added instead of averaged
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = -(3 - math.log(math.e + math.e ** 2 + math.e ** 3)) + math.log(3)
    loss = SoftmaxCrossEntropy(reduction="sum")
    assert loss.forward(logits, np.array([2, 0])) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(loss.backward()[1], np.full(3, 1 / 3) - [1, 0, 0], rtol=1e-12)   # no 1/B


def test_summed_mse_by_hand():
    outputs = np.array([[0.5, 0.25, 0.0], [1.0, 0.0, 0.5]])
    loss = MeanSquaredError(reduction="sum")
    assert loss.forward(outputs, np.array([0, 2])) == pytest.approx(0.78125, rel=1e-12)    # (0.3125 + 1.25) / 2
    np.testing.assert_allclose(loss.backward(), [[-0.5, 0.25, 0], [1, 0, -0.5]], rtol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_summed_loss_gradient_matches_finite_differences(name, rng):
    outputs = rng.uniform(0.05, 0.95, (5, 4))
    assert check_loss(LOSSES[name]("sum"), outputs, rng.integers(0, 4, 5)) < TOLERANCE


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_sgd_on_the_sum_at_lr_equals_sgd_on_the_mean_at_lr_times_batch(name, rng):
    """One step: the weights agree to float32 rounding (the module docstring's lr_sum = lr_mean / B)."""
    batch, lr = 16, 0.01
    x = rng.random((batch, 12), dtype=np.float32)
    labels = rng.integers(0, 4, batch)
    models = []
    for reduction, rate in (("mean", lr * batch), ("sum", lr)):
        model = Sequential.from_spec("12-8-4", "tanh", rng=np.random.default_rng(5))
        loss = make_loss(name, reduction=reduction)
        loss.forward(model.forward(x, training=True), labels)
        model.backward(loss.backward())
        SGD(rate).step(model.parameters())
        models.append(model)
    start = Sequential.from_spec("12-8-4", "tanh", rng=np.random.default_rng(5))
    for (key, p_mean, _), (_, p_sum, _), (_, p0, _) in zip(models[0].named_parameters(), models[1].named_parameters(),
                                                          start.named_parameters(), strict=True):
        assert p_mean.dtype == np.float32
        assert not np.allclose(p_mean, p0, rtol=0, atol=1e-4), key           # the step did move them
        np.testing.assert_allclose(p_sum, p_mean, rtol=1e-6, atol=1e-7, err_msg=key)
