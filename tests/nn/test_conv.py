"""Conv2D (the reference): values against the defining sum, gradients against finite differences, shapes,
configs, and a whole CNN built with Sequential (shapes, gradients through every layer, learning)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import SGD, Dense, Flatten, ReLU, Sequential, SoftmaxCrossEntropy, layer_from_config
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import Conv2D, output_size, pair_text, windows
from digitnet.nn.gradcheck import check_layer, numeric_gradient, relative_error
from digitnet.nn.pooling import AvgPool2D, MaxPool2D

TOLERANCE = 1e-6

# (in_channels, out_channels, kernel, stride, padding, height, width)
CONFIGS = [
    (1, 3, 3, 1, 1, 6, 6),            # first-layer case (C_in = 1), "same"
    (1, 2, 5, 1, 2, 7, 6),            # kernel 5, padding 2, non-square image
    (3, 4, 3, 2, 1, 7, 8),            # stride 2, C_in > 1
    (2, 3, 5, 2, 2, 9, 9),            # kernel 5, stride 2, padding 2
    (2, 2, 3, 1, 0, 5, 6),            # no padding, C_in > 1
    (1, 2, 3, 1, 0, 6, 5),            # no padding, C_in = 1
    (2, 3, (2, 3), (2, 1), (0, 1), 7, 7),   # rectangular kernel, per-axis stride and padding
    (3, 2, 3, 3, 0, 8, 8),            # stride 3: the last input row/column is in no window
]


def reference_conv(x, weights, bias, stride, padding):
    """The defining sum, one output pixel at a time (slow; for checking only)."""
    (sh, sw), (ph, pw) = stride, padding
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    batch = x.shape[0]
    out_channels, _, kh, kw = weights.shape
    out_h = (x_pad.shape[2] - kh) // sh + 1
    out_w = (x_pad.shape[3] - kw) // sw + 1
    y = np.zeros((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for o in range(out_channels):
            for h in range(out_h):
                for w in range(out_w):
                    patch = x_pad[b, :, h * sh:h * sh + kh, w * sw:w * sw + kw]
                    y[b, o, h, w] = np.sum(patch * weights[o]) + bias[o]
    return y


def make_conv(config, rng, algorithm="auto"):
    c_in, c_out, kernel, stride, padding, _, _ = config
    conv = Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, rng=rng, algorithm=algorithm)
    conv.params["bias"][...] = rng.standard_normal(c_out)
    return conv


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_forward_equals_the_defining_sum(config, rng):
    conv = make_conv(config, rng)
    x = rng.standard_normal((3, config[0], config[5], config[6])).astype(np.float32)
    y = conv.forward(x)
    expected = reference_conv(x.astype(np.float64), conv.params["weights"].astype(np.float64),
                              conv.params["bias"], conv.stride, conv.padding)
    assert y.dtype == np.float32
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert conv.output_shape(x.shape[1:]) == y.shape[1:]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gradients_match_finite_differences(config, rng):
    conv = make_conv(config, rng)
    x = rng.standard_normal((2, config[0], config[5], config[6]))
    errors = check_layer(conv, x, rng)
    assert set(errors) == {"input", "weights", "bias"}
    for name, error in errors.items():
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("algorithm", ["auto", "im2col", "fourier"])
def test_the_algorithm_setting_does_not_change_the_reference(algorithm, rng):
    """``algorithm`` is only a hint for the kernel: the reference computes the same im2col numbers."""
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    plain = Conv2D(2, 3, 3, padding=1, rng=np.random.default_rng(1))
    hinted = Conv2D(2, 3, 3, padding=1, rng=np.random.default_rng(1), algorithm=algorithm)
    np.testing.assert_array_equal(hinted.forward(x), plain.forward(x))
    assert hinted.config()["algorithm"] == algorithm


def test_backward_matches_the_closed_forms(rng):
    """dL/dbias is the sum of grad_out; dL/dweights is the correlation of x with grad_out."""
    conv = Conv2D(2, 3, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    conv.forward(x, training=True)
    grad_out = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    conv.backward(grad_out.copy())
    np.testing.assert_allclose(conv.grads["bias"], grad_out.sum(axis=(0, 2, 3)), rtol=1e-5)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((3, 2, 3, 3))
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = np.einsum("bohw,bchw->oc", grad_out, x_pad[:, :, i:i + 5, j:j + 5])
    np.testing.assert_allclose(conv.grads["weights"], expected, rtol=1e-4, atol=1e-5)


def test_forward_keeps_the_patch_matrix_of_its_formula(rng):
    """``cols[p, (c, i, j)] = x_pad[b, c, h*sH + i, w*sW + j]`` for ``p = (b, h, w)``: [P, K]."""
    conv = Conv2D(2, 3, 3, stride=2, padding=1, rng=rng)
    x = rng.standard_normal((2, 2, 5, 4))
    conv.forward(x, training=True)
    out_h, out_w = conv.output_hw(5, 4)
    assert conv.cols.shape == (2 * out_h * out_w, 2 * 3 * 3)
    assert conv.x_shape == x.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    b, h, w = 1, 2, 1
    row = conv.cols[(b * out_h + h) * out_w + w]
    np.testing.assert_array_equal(row, x_pad[b, :, 2 * h:2 * h + 3, 2 * w:2 * w + 3].ravel())
    conv.release_buffers()
    assert conv.cols is None and conv.x_shape is None


def test_windows_is_a_view_of_every_patch(rng):
    x_pad = rng.standard_normal((2, 3, 6, 7))
    view = windows(x_pad, (3, 2), (2, 1), (2, 6))
    assert view.shape == (2, 3, 2, 6, 3, 2)
    assert np.shares_memory(view, x_pad)
    np.testing.assert_array_equal(view[1, 2, 1, 4], x_pad[1, 2, 2:5, 4:6])


def test_a_centred_delta_kernel_copies_the_input(rng):
    conv = Conv2D(2, 2, 3, padding=1)
    conv.params["weights"][...] = 0
    conv.params["weights"][0, 0, 1, 1] = 1
    conv.params["weights"][1, 1, 1, 1] = 1
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(conv.forward(x), x, atol=1e-6)


def test_one_layer_handles_several_image_sizes(rng):
    conv = Conv2D(2, 3, 3, padding=1, rng=rng)
    for size in (6, 9, 6):
        x = rng.standard_normal((2, 2, size, size))
        expected = reference_conv(x, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
        np.testing.assert_allclose(conv.forward(x.astype(np.float32)), expected, atol=1e-5)


def test_single_image_and_empty_batches(rng):
    conv = Conv2D(2, 3, 3, padding=1, rng=rng)
    one = rng.standard_normal((1, 2, 5, 5))
    expected = reference_conv(one, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
    np.testing.assert_allclose(conv.forward(one.astype(np.float32), training=True), expected, atol=1e-5)
    empty = np.zeros((0, 2, 5, 5), dtype=np.float32)
    assert conv.forward(empty).shape == (0, 3, 5, 5)
    y = conv.forward(empty, training=True)
    assert conv.backward(np.zeros_like(y)).shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(conv.grads["weights"], 0)
    np.testing.assert_array_equal(conv.grads["bias"], 0)


def test_float64_inputs_give_float64_outputs(rng):
    conv = Conv2D(1, 2, 3, rng=rng)
    assert conv.forward(rng.standard_normal((1, 1, 4, 4))).dtype == np.float64


def test_he_initialisation_uses_fan_in_of_the_patch():
    conv = Conv2D(32, 64, 5, rng=np.random.default_rng(1))
    fan_in = 32 * 5 * 5
    assert conv.params["weights"].shape == (64, 32, 5, 5)
    assert conv.params["weights"].dtype == np.float32
    assert abs(conv.params["weights"].std() - np.sqrt(2 / fan_in)) < 0.05 * np.sqrt(2 / fan_in)
    np.testing.assert_array_equal(conv.params["bias"], np.zeros(64))
    assert conv.num_params() == 64 * 32 * 25 + 64


@pytest.mark.parametrize(("size", "kernel", "stride", "padding", "expected"), [
    (28, 5, 1, 2, 28), (28, 3, 1, 0, 26), (28, 3, 2, 1, 14), (7, 3, 3, 0, 2), (4, 5, 1, 0, 0), (5, 5, 2, 0, 1),
])
def test_output_size_formula(size, kernel, stride, padding, expected):
    assert output_size(size, kernel, stride, padding) == expected


def test_output_shape_and_shape_errors():
    conv = Conv2D(1, 32, 5, padding=2)
    assert conv.output_shape((1, 28, 28)) == (32, 28, 28)
    assert Conv2D(32, 64, 3, stride=2, padding=1).output_shape((32, 14, 14)) == (64, 7, 7)
    with pytest.raises(ConfigError, match="channels|expects"):
        conv.output_shape((3, 28, 28))
    with pytest.raises(ConfigError):
        conv.output_shape((784,))
    with pytest.raises(ConfigError, match="does not fit"):
        Conv2D(1, 1, 5).output_shape((1, 3, 3))
    with pytest.raises(ConfigError, match=r"Conv2D expects input \[B, 1, H, W\]"):
        conv.forward(np.zeros((2, 3, 28, 28), dtype=np.float32))
    with pytest.raises(ConfigError, match="does not fit"):
        Conv2D(1, 1, 5).forward(np.zeros((1, 1, 3, 3), dtype=np.float32))


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 0}, {"kernel_size": [3]}, {"kernel_size": "3"}, {"kernel_size": True},
    {"stride": 0}, {"padding": -1}, {"init": "zeros"}, {"in_channels": 0}, {"out_channels": 2.5},
    {"algorithm": "strassen"}, {"algorithm": "fourier", "stride": 2}, {"algorithm": "winograd", "stride": 2},
    {"algorithm": "winograd", "kernel_size": 5},
])
def test_bad_arguments_raise_config_error(kwargs):
    args = {"in_channels": 1, "out_channels": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError):
        Conv2D(**args)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kernel_size": 0}, r"Conv2D kernel_size must be >= 1, got 0"),
    ({"kernel_size": "3"}, r"Conv2D kernel_size must be an integer or a pair of integers, got '3'"),
    ({"padding": -1}, r"Conv2D padding must be >= 0, got -1"),
    ({"algorithm": "strassen"}, r"Conv2D algorithm must be one of auto, im2col, fourier, winograd, got 'strassen'"),
    ({"init": "zeros"}, r"Conv2D init must be one of he, xavier, lecun"),
    ({"algorithm": "fourier", "stride": 2}, "the fourier convolution algorithm needs stride 1"),
])
def test_bad_arguments_give_the_registry_message(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Conv2D(**{"in_channels": 1, "out_channels": 2, "kernel_size": 3, **kwargs})


def test_pairs_are_normalised_and_described():
    conv = Conv2D(3, 8, [3, 5], stride=np.int64(2), padding=(1, 1))
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 5), (2, 2), (1, 1))
    assert pair_text((3, 3)) == "3" and pair_text((3, 5)) == "3x5"
    assert conv.describe() == "3->8 k3x5 s2 p1 (he)"
    assert Conv2D(1, 4, 3).describe() == "1->4 k3 (he)"


def test_config_round_trip(rng):
    conv = Conv2D(3, 8, (3, 5), stride=2, padding=(1, 2), init="xavier", rng=rng)
    config = conv.config()
    assert config == {"type": "Conv2D", "in_channels": 3, "out_channels": 8, "kernel_size": [3, 5],
                      "stride": 2, "padding": [1, 2], "init": "xavier", "algorithm": "auto"}
    rebuilt = layer_from_config(config, rng)
    assert isinstance(rebuilt, Conv2D)
    assert rebuilt.config() == config
    assert rebuilt.params["weights"].shape == (8, 3, 3, 5)
    with pytest.raises(ConfigError):
        layer_from_config({**config, "kernel_size": 0})


# -- a whole CNN through Sequential ------------------------------------------------------------
def small_cnn(rng, batchnorm=False):
    # BatchNorm after the pooling: right after a convolution it would make that convolution's
    # bias gradient exactly 0 (a per-channel constant is normalised away)
    layers = [Conv2D(1, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2)]
    layers += [BatchNorm(4)] if batchnorm else []
    layers += [Conv2D(4, 6, 3, padding=1, rng=rng), ReLU(), AvgPool2D(2), Flatten(), Dense(6 * 2 * 2, 3, rng=rng)]
    return Sequential(layers, input_shape=(1, 8, 8), rng=rng)


def test_mnist_cnn_shapes_and_summary():
    model = Sequential([
        Conv2D(1, 32, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 5, padding=2), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3136, 128), ReLU(), Dense(128, 10),
    ], input_shape=(1, 28, 28))
    assert model.output_shapes() == [(32, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 14, 14),
                                     (64, 7, 7), (3136,), (128,), (128,), (10,)]
    summary = model.summary()
    assert "[None, 32, 14, 14]" in summary and "[None, 64, 7, 7]" in summary
    assert model.num_params() == 832 + 51264 + 401536 + 1290
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert model.forward(x).shape == (2, 10)


def test_wrong_dense_size_after_convolutions_is_a_config_error():
    with pytest.raises(ConfigError):
        Sequential([Conv2D(1, 2, 3), Flatten(), Dense(2 * 28 * 28, 10)], input_shape=(1, 28, 28))


def test_cnn_config_and_state_round_trip(rng):
    model = small_cnn(rng, batchnorm=True)
    x = rng.random((5, 1, 8, 8), dtype=np.float32)
    model.forward(x, training=True)                      # moves BatchNorm's running statistics
    rebuilt = Sequential.from_config(model.config(), rng=np.random.default_rng(9))
    assert rebuilt.config() == model.config()
    state = model.state_dict()
    assert "layers.3.running_mean" in state and "layers.3.running_var" in state
    rebuilt.load_state_dict(state)
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))


def test_cnn_gradients_through_every_layer(rng):
    """Back-propagation through conv/BN/ReLU/pool/flatten/dense agrees with finite differences, for every
    parameter and for the images themselves (the reference model returns dL/d(inputs))."""
    model = small_cnn(rng, batchnorm=True)
    for layer in model.layers:
        for store in (layer.params, layer.grads, layer.buffers):
            for key in store:
                store[key] = store[key].astype(np.float64)
        layer.release_buffers()
    x = rng.random((3, 1, 8, 8))
    labels = np.array([0, 2, 1])
    loss = SoftmaxCrossEntropy()

    def f() -> float:
        return loss.forward(model.forward(x, training=True), labels)

    f()
    grad_x = model.backward(loss.backward())
    for name, param, grad in model.named_parameters():
        analytic = grad.copy()
        error = relative_error(analytic, numeric_gradient(f, param))
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"
    assert relative_error(grad_x, numeric_gradient(f, x)) < TOLERANCE


def test_a_cnn_learns_a_synthetic_task(rng):
    """Vertical vs horizontal vs diagonal bars: a few SGD steps must reach perfect accuracy."""
    images = np.zeros((60, 1, 8, 8), dtype=np.float32)
    labels = np.arange(60) % 3
    for n, label in enumerate(labels):
        pos = rng.integers(1, 7)
        if label == 0:
            images[n, 0, :, pos] = 1
        elif label == 1:
            images[n, 0, pos, :] = 1
        else:
            np.fill_diagonal(images[n, 0], 1)
        images[n, 0] += 0.1 * rng.random((8, 8), dtype=np.float32)
    model = small_cnn(rng)
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(lr=0.1, momentum=0.9)
    first = None
    for _ in range(60):
        value = loss.forward(model.forward(images, training=True), labels)
        first = value if first is None else first
        model.backward(loss.backward())
        optimizer.step(model.parameters())              # after each backward: the grads are new arrays
    assert value < 0.2 * first
    assert np.mean(model.predict(images) == labels) == 1.0


def test_backward_before_any_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward"):
        Conv2D(1, 2, 3).backward(np.ones((1, 2, 2, 2), dtype=np.float32))
