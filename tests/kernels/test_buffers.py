"""The Buffered mixin: work buffers reused from batch to batch, training outputs that are buffers,
release_buffers, and adopt() (a kernel sharing a reference layer's arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.kernels import KERNELS, fast_twin
from digitnet.kernels.activations import FastReLU
from digitnet.kernels.buffers import Buffered
from digitnet.kernels.dense import FastDense
from digitnet.nn import BatchNorm, Conv2D, Dense, Dropout, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh


def test_work_buffer_is_reused_until_the_shape_or_dtype_changes():
    layer = fast_twin(ReLU())
    first = layer.work_buffer("y", (2, 3), np.dtype(np.float32))
    assert layer.work_buffer("y", (2, 3), np.dtype(np.float32)) is first
    assert layer.work_buffer("other", (2, 3), np.dtype(np.float32)) is not first
    second = layer.work_buffer("y", (4, 3), np.dtype(np.float32))
    assert second is not first and second.shape == (4, 3)
    assert layer.work_buffer("y", (4, 3), np.dtype(np.float64)).dtype == np.float64
    layer.release_buffers()
    assert layer._work == {}


def test_output_buffer_is_reused_in_training_and_fresh_in_inference():
    layer = fast_twin(ReLU())
    dtype = np.dtype(np.float32)
    assert layer.output_buffer("y", (2, 2), dtype, training=True) is layer.output_buffer("y", (2, 2), dtype, True)
    fresh = layer.output_buffer("y", (2, 2), dtype, training=False)
    assert fresh is not layer.output_buffer("y", (2, 2), dtype, training=False)
    assert fresh is not layer._work["y"]


def test_training_outputs_reuse_a_buffer_and_inference_outputs_are_fresh():
    relu = fast_twin(ReLU())
    x = np.array([[1.0, -1.0]], dtype=np.float32)
    train_a = relu.forward(x, training=True)
    train_b = relu.forward(2 * x, training=True)
    assert train_a is train_b                       # valid until the next training forward ...
    np.testing.assert_array_equal(train_a, [[2, 0]])   # ... which overwrote it
    infer_a = relu.forward(x, training=False)
    infer_b = relu.forward(x, training=False)
    assert infer_a is not infer_b and infer_a is not train_a
    relu.forward(3 * x, training=False)
    np.testing.assert_array_equal(infer_a, [[1, 0]])    # inference outputs are the caller's to keep


def test_release_buffers_drops_cached_activations_too(rng):
    dense, relu = fast_twin(Dense(3, 2, rng=rng)), fast_twin(ReLU())
    relu.forward(dense.forward(rng.random((4, 3), dtype=np.float32), training=True), training=True)
    assert dense.x is not None and relu.y is not None and relu._work and dense._work
    dense.release_buffers()
    relu.release_buffers()
    assert dense.x is None and relu.y is None and relu._work == {} and dense._work == {}


def test_adopt_shares_the_reference_arrays_and_settings(rng):
    reference = Dense(4, 3, init="xavier", rng=rng)
    fast = fast_twin(reference)
    assert type(fast) is FastDense and isinstance(fast, Dense) and isinstance(fast, Buffered)
    assert fast is not reference
    for store in ("params", "grads", "buffers"):
        for key, value in getattr(reference, store).items():
            assert getattr(fast, store)[key] is value                # the same arrays, not copies
    assert fast.config() == reference.config() and fast.layer_type == "Dense"
    assert fast.registry_entry is reference.registry_entry
    assert fast._work == {} and fast.compute_input_grad is True


def test_a_kernel_writes_its_gradients_where_the_reference_reads_them(rng):
    reference = Dense(4, 3, rng=rng)
    fast = fast_twin(reference)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    grad = rng.standard_normal((5, 3)).astype(np.float32)
    fast.forward(x, training=True)
    fast.backward(grad.copy())
    np.testing.assert_allclose(reference.grads["weights"], x.T @ grad, rtol=1e-5, atol=1e-6)
    reference.params["bias"][...] = 1.0
    np.testing.assert_allclose(fast.forward(np.zeros((1, 4), np.float32)), 1.0)   # and reads its parameters


def test_batchnorm_running_statistics_stay_shared(rng):
    reference = BatchNorm(3)
    fast = fast_twin(reference)
    fast.forward(rng.standard_normal((8, 3)).astype(np.float32) + 5, training=True)
    assert fast.buffers["running_mean"] is reference.buffers["running_mean"]      # updated in place
    assert np.all(reference.buffers["running_mean"] > 0.3)


@pytest.mark.parametrize("reference", [ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), Softmax(), Dense(3, 2),
                                       Dropout(0.3), BatchNorm(3), Conv2D(1, 2, 3), MaxPool2D(2)],
                         ids=lambda layer: type(layer).__name__)
def test_every_buffered_kernel_starts_with_no_work_and_computes_its_input_gradient(reference):
    fast = fast_twin(reference)
    assert type(fast) is KERNELS[type(reference)] and isinstance(fast, Buffered)
    assert fast._work == {} and fast.compute_input_grad is True
    assert fast.config() == reference.config()


def test_release_buffers_of_a_kernel_keeps_parameters(rng):
    relu_like = FastReLU.adopt(ReLU())
    relu_like.forward(np.ones((2, 2), np.float32), training=True)
    dense = fast_twin(Dense(2, 2, rng=rng))
    weights = dense.params["weights"]
    dense.release_buffers()
    relu_like.release_buffers()
    assert dense.params["weights"] is weights and relu_like.y is None
