"""FastMaxPool2D and FastAvgPool2D: the tournament over offset views and the chunked 2x2 fast path against
window-by-window references and finite differences, the tie rule, reused buffers, the skipped input gradient."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.pooling as pooling_module
from digitnet.kernels import fast_twin
from digitnet.kernels.pooling import FastAvgPool2D, FastMaxPool2D
from digitnet.nn.gradcheck import check_layer
from digitnet.nn.pooling import AvgPool2D, MaxPool2D
from tests.nn.test_pooling import WINDOWS, reference_pool

TOLERANCE = 1e-6


def fast_max(*args, **kwargs) -> FastMaxPool2D:
    pool = fast_twin(MaxPool2D(*args, **kwargs))
    assert type(pool) is FastMaxPool2D
    return pool


def fast_avg(*args, **kwargs) -> FastAvgPool2D:
    pool = fast_twin(AvgPool2D(*args, **kwargs))
    assert type(pool) is FastAvgPool2D
    return pool


@pytest.mark.parametrize("make, reduce", [(fast_max, np.max), (fast_avg, np.mean)], ids=["max", "avg"])
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_forward_equals_window_reference(make, reduce, window, rng):
    kernel, stride, height, width = window
    layer = make(kernel, stride)
    x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    expected = reference_pool(x, layer.kernel_size, layer.stride, reduce)
    for training in (True, False):
        y = layer.forward(x, training=training)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert layer.output_shape(x.shape[1:]) == expected.shape[1:]


@pytest.mark.parametrize("make", [fast_max, fast_avg], ids=["max", "avg"])
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_gradients_match_finite_differences(make, window, rng):
    kernel, stride, height, width = window
    x = rng.standard_normal((2, 3, height, width))
    errors = check_layer(make(kernel, stride), x, rng)
    assert errors["input"] < TOLERANCE, errors


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_max_pool_ties_route_like_the_reference(window, rng):
    """Many ties (small integers): the tournament (strictly greater wins) and the reference's argmax
    (first maximum wins) send every window's gradient to the same input."""
    kernel, stride, height, width = window
    x = rng.integers(-1, 2, (3, 2, height, width)).astype(np.float32)
    reference, fast = MaxPool2D(kernel, stride), fast_max(kernel, stride)
    y = reference.forward(x, training=True)
    np.testing.assert_array_equal(fast.forward(x, training=True), y)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    # overlapping windows add their shares in another order: equal up to float32 rounding
    np.testing.assert_allclose(fast.backward(grad.copy()), reference.backward(grad.copy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 6 * 6 * 8 + 4, 1 << 30])
def test_max_pool_2x2_fast_path_equals_the_general_tournament(chunk_bytes, rng, monkeypatch):
    """2x2 windows side by side take a chunked fast path; it must give the general path's outputs
    and gradients, ties included, for one chunk per image, a ragged last chunk, and one chunk."""
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", chunk_bytes)
    x = rng.integers(-2, 3, size=(7, 3, 6, 6)).astype(np.float32)     # many ties
    grad = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    fast, general = fast_max(2), fast_max(2)
    monkeypatch.setattr(general, "takes_fast_path", lambda shape: False)
    assert fast.takes_fast_path(x.shape)
    np.testing.assert_array_equal(fast.forward(x, training=True), general.forward(x, training=True))
    assert fast._matches == "halves" and general._matches != "halves"
    np.testing.assert_array_equal(fast.backward(grad.copy()), general.backward(grad.copy()))
    # each window's gradient lands on exactly one input
    routed = fast.backward(grad.copy())
    assert np.count_nonzero(routed) == np.count_nonzero(grad)


def parity_major(x: np.ndarray) -> np.ndarray:
    """``[B, C, H, W]`` as a contiguous ``[B, C, 2, 2, H/2, W/2]`` copy,
    ``[b, c, ph, pw, h2, w2] = x[b, c, 2 h2 + ph, 2 w2 + pw]``."""
    batch, channels, height, width = x.shape
    return np.ascontiguousarray(x.reshape(batch, channels, height // 2, 2, width // 2, 2).transpose(0, 1, 3, 5, 2, 4))


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 6 * 8 * 8 + 4, 1 << 30])
def test_the_parity_major_fast_path_gives_the_numbers_of_the_plain_one(chunk_bytes, rng, monkeypatch):
    """A parity-major input (from a convolution trained with its pooling) goes through the same matches:
    the same outputs and, ties included, the same gradients in parity-major order; and the pooling's own
    backward after it gives dL/dx in NCHW."""
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", chunk_bytes)
    x = rng.integers(-2, 3, size=(7, 3, 6, 8)).astype(np.float32)     # many ties
    grad = rng.standard_normal((7, 3, 3, 4)).astype(np.float32)
    plain, parity = fast_max(2), fast_max(2)
    expected = plain.forward(x, training=True).copy()
    expected_grad = plain.backward(grad)
    x_parity = parity_major(x)
    y = parity.start_fast_forward(x.shape, x.dtype, parity_major=True)
    for part in parity.fast_path_chunks(x.shape, x.dtype):
        parity.fast_forward_parity_chunk(x_parity[part], part, y)
    np.testing.assert_array_equal(y, expected)
    into = np.full_like(x_parity, np.nan)
    for part in parity.fast_path_chunks(x.shape, x.dtype):
        parity.fast_backward_parity_chunk(grad, part, into[part])
    np.testing.assert_array_equal(into, parity_major(expected_grad))
    assert parity._matches == "parity"
    np.testing.assert_array_equal(parity.backward(grad), expected_grad)


@pytest.mark.parametrize(("kernel", "stride", "shape", "expected"), [
    (2, None, (4, 3, 28, 28), True), (2, None, (4, 3, 6, 8), True), (2, None, (4, 3, 7, 8), False),
    (2, None, (4, 3, 8, 7), False), (2, 1, (4, 3, 8, 8), False), (3, None, (4, 3, 9, 9), False),
    ((2, 1), None, (4, 3, 8, 8), False),
])
def test_the_fast_path_is_for_2x2_windows_side_by_side_on_even_sizes(kernel, stride, shape, expected):
    assert fast_max(kernel, stride).takes_fast_path(shape) is expected


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 3 * 6 * 6 * 4, 1 << 30])
def test_fast_path_chunks_cover_the_batch_in_chunks_of_about_chunk_bytes(chunk_bytes, monkeypatch):
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", chunk_bytes)
    shape = (7, 3, 6, 6)
    pool = fast_max(2)
    per_chunk = pool.images_per_chunk(shape, np.dtype(np.float32))
    assert per_chunk == {1: 1, 2 * 3 * 6 * 6 * 4: 2, 1 << 30: (1 << 30) // (3 * 6 * 6 * 4)}[chunk_bytes]
    chunks = pool.fast_path_chunks(shape, np.dtype(np.float32))
    covered = np.concatenate([np.arange(7)[part] for part in chunks])
    np.testing.assert_array_equal(covered, np.arange(7))                 # every image once, in order
    assert all(len(np.arange(7)[part]) <= per_chunk for part in chunks)


def test_the_fast_path_keeps_only_a_chunk_of_row_maxima(rng, monkeypatch):
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", 2 * 3 * 6 * 6 * 4)     # two images per chunk
    pool = fast_max(2)
    pool.forward(rng.standard_normal((7, 3, 6, 6)).astype(np.float32), training=True)
    rows_max = [buf for name, buf in pool._work.items() if name.startswith("rows_max@")]   # one per thread
    assert rows_max and all(buf.shape == (2, 3, 6, 3) for buf in rows_max)
    assert pool._work["right_won"].shape == (7, 3, 6, 3) and pool._work["lower_won"].shape == (7, 3, 3, 3)


def test_max_pool_ties_have_one_winner_the_first_in_row_major_order():
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)       # e.g. a region zeroed by ReLU
    x[0, 0, 3, 2:] = 1                                 # bottom-right window: tie between two 1s
    for pool in (fast_max(2), fast_max(2, stride=(2, 2))):
        pool.forward(x, training=True)
        grad = pool.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
        np.testing.assert_array_equal(grad[0, 0], [[1, 0, 1, 0],
                                                   [0, 0, 0, 0],
                                                   [1, 0, 0, 0],
                                                   [0, 0, 1, 0]])


def test_backward_after_an_inference_pass_is_an_error(rng):
    pool = fast_max(2)
    y = pool.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), training=False)
    with pytest.raises(RuntimeError):
        pool.backward(np.ones_like(y))


@pytest.mark.parametrize("make", [fast_max, fast_avg], ids=["max", "avg"])
@pytest.mark.parametrize("size", [4, 5])
def test_first_layer_skips_the_input_gradient(make, size, rng):
    pool = make(2)
    pool.compute_input_grad = False
    y = pool.forward(rng.standard_normal((1, 1, size, size)).astype(np.float32), training=True)
    assert pool.backward(np.ones_like(y)) is None


@pytest.mark.parametrize("make", [fast_max, fast_avg], ids=["max", "avg"])
def test_training_outputs_reuse_a_buffer_and_inference_outputs_are_fresh(make, rng):
    pool = make(3, 2)
    x = rng.standard_normal((2, 2, 7, 7)).astype(np.float32)
    assert pool.forward(x, training=True) is pool.forward(x, training=True)
    assert pool.forward(x, training=False) is not pool.forward(x, training=False)
    grad = np.ones((2, 2, 3, 3), dtype=np.float32)
    pool.forward(x, training=True)
    assert pool.backward(grad.copy()) is pool.backward(grad.copy())          # dL/dx too is a work buffer


def test_avg_pool_backward_may_overwrite_its_gradient(rng):
    """The kernels' convention: grad_out is a temporary of the layer above and may be scaled in place."""
    pool = fast_avg(2)
    pool.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), training=True)
    grad = np.full((1, 1, 2, 2), 4.0, dtype=np.float32)
    routed = pool.backward(grad)
    np.testing.assert_array_equal(routed, 1.0)
    np.testing.assert_array_equal(grad, 1.0)                               # scaled by 1/4 in place


def test_overlapping_windows_accumulate_and_uncovered_inputs_get_zero(rng):
    x = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    avg = fast_avg(3, stride=1)
    avg.forward(x, training=True)
    grad = avg.backward(np.ones((1, 1, 3, 3), dtype=np.float32))
    assert grad[0, 0, 2, 2] == pytest.approx(1.0)                          # the centre is in all 9 windows
    assert grad[0, 0, 0, 0] == pytest.approx(1 / 9)
    pool = fast_max(2)
    for _ in range(2):             # the second time the reused dL/dx buffer still has the first one's values
        pool.forward(rng.standard_normal((1, 1, 5, 5)).astype(np.float32) + 10, training=True)
        grad = pool.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
        np.testing.assert_array_equal(grad[0, 0, 4, :], 0)
        np.testing.assert_array_equal(grad[0, 0, :, 4], 0)
        assert grad.sum() == 4


@pytest.mark.parametrize("make", [fast_max, fast_avg], ids=["max", "avg"])
def test_an_empty_batch_passes_through(make):
    """A batch of no images (the fast 2x2 path included) gives empty outputs and gradients."""
    pool = make(2)
    y = pool.forward(np.zeros((0, 3, 6, 6), dtype=np.float32), training=True)
    assert y.shape == (0, 3, 3, 3)
    assert pool.backward(np.zeros((0, 3, 3, 3), dtype=np.float32)).shape == (0, 3, 6, 6)


def test_the_kernels_keep_the_reference_settings_and_config():
    for reference in (MaxPool2D((2, 3), stride=(1, 2)), AvgPool2D(3)):
        fast = fast_twin(reference)
        assert fast.config() == reference.config() and fast.layer_type == reference.layer_type
        assert (fast.kernel_size, fast.stride) == (reference.kernel_size, reference.stride)
