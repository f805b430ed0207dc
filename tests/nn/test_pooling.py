"""MaxPool2D and AvgPool2D: values against window-by-window references, gradients against finite
differences (divisible, non-divisible and overlapping windows), the tie rule, shapes, configs."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import layer_from_config
from digitnet.nn.gradcheck import check_layer
from digitnet.nn.pooling import AvgPool2D, MaxPool2D

TOLERANCE = 1e-6

# (kernel, stride, height, width)
WINDOWS = [
    (2, None, 6, 6),          # the fast path: windows tile the image exactly
    (2, None, 7, 5),          # odd sizes: the last row/column is in no window
    (3, 2, 7, 7),             # overlapping windows
    (3, 1, 5, 6),             # heavily overlapping
    (2, 3, 8, 8),             # gaps between windows
    ((2, 3), (1, 2), 6, 7),   # rectangular window, per-axis stride
    (3, None, 9, 9),          # 9 offsets: an odd number of players in the max tournament
    (1, 2, 5, 5),             # 1x1 windows (a strided subsample)
    ((3, 1), (1, 2), 8, 7),   # one column per window: the W step is a plain view
    ((1, 3), (2, 1), 7, 8),   # one row per window
]


def reference_pool(x, kernel, stride, reduce):
    (kh, kw), (sh, sw) = kernel, stride
    batch, channels, height, width = x.shape
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    y = np.zeros((batch, channels, out_h, out_w))
    for h in range(out_h):
        for w in range(out_w):
            y[:, :, h, w] = reduce(x[:, :, h * sh:h * sh + kh, w * sw:w * sw + kw], axis=(2, 3))
    return y


@pytest.mark.parametrize("cls, reduce", [(MaxPool2D, np.max), (AvgPool2D, np.mean)])
@pytest.mark.parametrize("window", WINDOWS)
def test_forward_equals_window_reference(cls, reduce, window, rng):
    kernel, stride, height, width = window
    layer = cls(kernel, stride)
    x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    expected = reference_pool(x, layer.kernel_size, layer.stride, reduce)
    for training in (True, False):
        y = layer.forward(x, training=training)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert layer.output_shape(x.shape[1:]) == expected.shape[1:]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("window", WINDOWS)
def test_gradients_match_finite_differences(cls, window, rng):
    kernel, stride, height, width = window
    x = rng.standard_normal((2, 3, height, width))
    errors = check_layer(cls(kernel, stride), x, rng)
    assert errors["input"] < TOLERANCE, errors


def test_max_pool_routes_the_gradient_to_the_maximum():
    x = np.array([[[[1, 5, 0, 0],
                    [2, 3, 0, 9],
                    [7, 1, 4, 4],
                    [0, 0, 4, 8]]]], dtype=np.float32)
    pool = MaxPool2D(2)
    y = pool.forward(x, training=True)
    np.testing.assert_array_equal(y[0, 0], [[5, 9], [7, 8]])
    grad = pool.backward(np.array([[[[10, 20], [30, 40]]]], dtype=np.float32))
    np.testing.assert_array_equal(grad[0, 0], [[0, 10, 0, 0],
                                               [0, 0, 0, 20],
                                               [30, 0, 0, 0],
                                               [0, 0, 0, 40]])


def test_max_pool_ties_have_one_winner_the_first_in_row_major_order():
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)       # e.g. a region zeroed by ReLU
    x[0, 0, 3, 2:] = 1                                 # bottom-right window: tie between two 1s
    pool = MaxPool2D(2)
    pool.forward(x, training=True)
    grad = pool.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
    np.testing.assert_array_equal(grad[0, 0], [[1, 0, 1, 0],
                                               [0, 0, 0, 0],
                                               [1, 0, 0, 0],
                                               [0, 0, 1, 0]])
    assert grad.sum() == 4                             # each window's gradient counted once


def test_overlapping_windows_accumulate_and_uncovered_inputs_get_zero(rng):
    x = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    avg = AvgPool2D(3, stride=1)
    avg.forward(x, training=True)
    grad = avg.backward(np.ones((1, 1, 3, 3), dtype=np.float32))
    # the centre is in all 9 windows, a corner in 1
    assert grad[0, 0, 2, 2] == pytest.approx(1.0)
    assert grad[0, 0, 0, 0] == pytest.approx(1 / 9)
    pool = MaxPool2D(2)
    pool.forward(rng.standard_normal((1, 1, 5, 5)).astype(np.float32), training=True)
    grad = pool.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
    np.testing.assert_array_equal(grad[0, 0, 4, :], 0)
    np.testing.assert_array_equal(grad[0, 0, :, 4], 0)


def test_avg_pool_of_a_constant_is_the_constant():
    x = np.full((2, 3, 6, 6), 2.5, dtype=np.float32)
    np.testing.assert_allclose(AvgPool2D(3, 3).forward(x), 2.5)


def test_backward_after_an_inference_pass_is_an_error(rng):
    pool = MaxPool2D(2)
    y = pool.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), training=False)
    with pytest.raises(RuntimeError):
        pool.backward(np.ones_like(y))


def test_first_layer_skips_the_input_gradient(rng):
    pool = MaxPool2D(2)
    pool.compute_input_grad = False
    y = pool.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), training=True)
    assert pool.backward(np.ones_like(y)) is None


def test_shapes_and_errors():
    assert MaxPool2D(2).output_shape((32, 28, 28)) == (32, 14, 14)
    assert MaxPool2D(2).output_shape((64, 7, 7)) == (64, 3, 3)
    assert AvgPool2D(3, 2).output_shape((8, 7, 7)) == (8, 3, 3)
    with pytest.raises(ConfigError):
        MaxPool2D(2).output_shape((784,))
    with pytest.raises(ConfigError, match="does not fit"):
        MaxPool2D(5).output_shape((1, 4, 4))
    with pytest.raises(ConfigError):
        MaxPool2D(2).forward(np.zeros((2, 784), dtype=np.float32))
    for bad in ({"kernel_size": 0}, {"stride": 0}, {"kernel_size": 2.5}):
        with pytest.raises(ConfigError):
            MaxPool2D(**bad)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_config_round_trip(cls):
    layer = cls(3, stride=2)
    assert layer.config() == {"type": cls.__name__, "kernel_size": 3, "stride": 2}
    assert cls(2).config()["stride"] == 2              # stride defaults to the kernel size
    rebuilt = layer_from_config(layer.config())
    assert type(rebuilt) is cls and rebuilt.config() == layer.config()


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 6 * 6 * 8 + 4, 1 << 30])
def test_max_pool_2x2_fast_path_equals_the_general_tournament(chunk_bytes, rng, monkeypatch):
    """2x2 windows side by side take a chunked fast path; it must give the general path's outputs
    and gradients, ties included, for one chunk per image, a ragged last chunk, and one chunk."""
    monkeypatch.setattr("digitnet.nn.pooling.CHUNK_BYTES", chunk_bytes)
    x = rng.integers(-2, 3, size=(7, 3, 6, 6)).astype(np.float32)     # many ties
    grad = rng.standard_normal((7, 3, 3, 3)).astype(np.float32)
    fast, general = MaxPool2D(2), MaxPool2D(2)
    monkeypatch.setattr(general, "takes_fast_path", lambda shape: False)
    assert fast.takes_fast_path(x.shape)
    np.testing.assert_array_equal(fast.forward(x, training=True), general.forward(x, training=True))
    np.testing.assert_array_equal(fast.backward(grad.copy()), general.backward(grad.copy()))
    # each window's gradient lands on exactly one input
    routed = fast.backward(grad.copy())
    assert np.count_nonzero(routed) == np.count_nonzero(grad)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_an_empty_batch_passes_through(cls):
    """A batch of no images (the fast 2x2 path included) gives empty outputs and gradients."""
    pool = cls(2)
    y = pool.forward(np.zeros((0, 3, 6, 6), dtype=np.float32), training=True)
    assert y.shape == (0, 3, 3, 3)
    assert pool.backward(np.zeros((0, 3, 3, 3), dtype=np.float32)).shape == (0, 3, 6, 6)
