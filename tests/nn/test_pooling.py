"""MaxPool2D and AvgPool2D (the reference): values against window-by-window references, gradients against
finite differences (divisible, non-divisible and overlapping windows), the tie rule, shapes, configs."""

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
    (2, None, 6, 6),          # windows tile the image exactly
    (2, None, 7, 5),          # odd sizes: the last row/column is in no window
    (3, 2, 7, 7),             # overlapping windows
    (3, 1, 5, 6),             # heavily overlapping
    (2, 3, 8, 8),             # gaps between windows
    ((2, 3), (1, 2), 6, 7),   # rectangular window, per-axis stride
    (3, None, 9, 9),          # 9 offsets per window
    (1, 2, 5, 5),             # 1x1 windows (a strided subsample)
    ((3, 1), (1, 2), 8, 7),   # one column per window
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
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_forward_equals_window_reference(cls, reduce, window, rng):
    kernel, stride, height, width = window
    layer = cls(kernel, stride)
    x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
    expected = reference_pool(x, layer.kernel_size, layer.stride, reduce)
    for training in (True, False):
        y = layer.forward(x, training=training)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
        assert y.dtype == np.float32
    assert layer.output_shape(x.shape[1:]) == expected.shape[1:]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("window", WINDOWS, ids=str)
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
    # the kept argmax is each winner's offset in its window, row-major: (0, 1), (1, 1), (0, 0), (1, 1)
    np.testing.assert_array_equal(pool.argmax[0, 0], [[1, 3], [0, 3]])
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


def test_overlapping_max_windows_add_up_their_gradients():
    x = np.zeros((1, 1, 3, 3), dtype=np.float32)
    x[0, 0, 1, 1] = 5                                  # the centre wins all four 2x2 windows
    pool = MaxPool2D(2, stride=1)
    pool.forward(x, training=True)
    grad = pool.backward(np.array([[[[1, 2], [3, 4]]]], dtype=np.float32))
    assert grad[0, 0, 1, 1] == 10 and grad.sum() == 10


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


def test_max_pool_backward_before_any_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward"):
        MaxPool2D(2).backward(np.ones((1, 1, 2, 2), dtype=np.float32))


def test_release_buffers_forgets_the_winners(rng):
    pool = MaxPool2D(2)
    pool.forward(rng.standard_normal((1, 2, 4, 4)).astype(np.float32), training=True)
    assert pool.argmax.shape == (1, 2, 2, 2) and pool.x_shape == (1, 2, 4, 4)
    pool.release_buffers()
    assert pool.argmax is None and pool.x_shape is None
    with pytest.raises(RuntimeError):
        pool.backward(np.ones((1, 2, 2, 2), dtype=np.float32))


def test_the_first_pooling_of_a_model_still_returns_its_input_gradient(rng):
    """The reference never skips dL/dx (the kernels do, for the first layers of a model)."""
    for pool in (MaxPool2D(2), AvgPool2D(2)):
        y = pool.forward(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), training=True)
        assert pool.backward(np.ones_like(y)).shape == (1, 1, 4, 4)


def test_shapes_and_errors():
    assert MaxPool2D(2).output_shape((32, 28, 28)) == (32, 14, 14)
    assert MaxPool2D(2).output_shape((64, 7, 7)) == (64, 3, 3)
    assert AvgPool2D(3, 2).output_shape((8, 7, 7)) == (8, 3, 3)
    with pytest.raises(ConfigError, match=r"MaxPool2D expects inputs of shape \(C, H, W\)"):
        MaxPool2D(2).output_shape((784,))
    with pytest.raises(ConfigError, match="MaxPool2D window 5 does not fit a 4x4 input"):
        MaxPool2D(5).output_shape((1, 4, 4))
    with pytest.raises(ConfigError, match=r"AvgPool2D expects input \[B, C, H, W\]"):
        AvgPool2D(2).forward(np.zeros((2, 784), dtype=np.float32))
    for bad, message in (({"kernel_size": 0}, r"MaxPool2D kernel_size must be >= 1, got 0"),
                         ({"stride": 0}, r"MaxPool2D stride must be >= 1, got 0"),
                         ({"kernel_size": 2.5}, r"MaxPool2D kernel_size must be an integer or a pair of integers")):
        with pytest.raises(ConfigError, match=message):
            MaxPool2D(**bad)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_config_round_trip(cls):
    layer = cls(3, stride=2)
    assert layer.config() == {"type": cls.__name__, "kernel_size": 3, "stride": 2}
    assert cls(2).config()["stride"] == 2              # stride defaults to the kernel size
    assert cls((2, 3)).config() == {"type": cls.__name__, "kernel_size": [2, 3], "stride": [2, 3]}
    rebuilt = layer_from_config(layer.config())
    assert type(rebuilt) is cls and rebuilt.config() == layer.config()
    assert cls(3, stride=2).describe() == "3, stride 2" and cls(2).describe() == "2"


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_an_empty_batch_passes_through(cls):
    """A batch of no images gives empty outputs and gradients."""
    pool = cls(2)
    y = pool.forward(np.zeros((0, 3, 6, 6), dtype=np.float32), training=True)
    assert y.shape == (0, 3, 3, 3)
    assert pool.backward(np.zeros((0, 3, 3, 3), dtype=np.float32)).shape == (0, 3, 6, 6)
