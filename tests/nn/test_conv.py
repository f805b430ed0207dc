"""Conv2D: values against the defining sum, gradients against finite differences, shapes, configs,
and a whole CNN built with Sequential (shapes, gradients through every layer, learning)."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.nn.conv as conv_module
from digitnet.errors import ConfigError
from digitnet.nn import Dense, Flatten, ReLU, Sequential, SoftmaxCrossEntropy, layer_from_config
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import FOURIER_MIN_BATCH, Conv2D, output_size
from digitnet.nn.gradcheck import check_layer, numeric_gradient, relative_error
from digitnet.nn.pooling import AvgPool2D, MaxPool2D

TOLERANCE = 1e-6

# (in_channels, out_channels, kernel, stride, padding, height, width)
CONFIGS = [
    (1, 3, 3, 1, 1, 6, 6),            # first-layer case (C_in = 1: transposed patch layout), "same"
    (1, 2, 5, 1, 2, 7, 6),            # kernel 5, padding 2, non-square image
    (3, 4, 3, 2, 1, 7, 8),            # stride 2, C_in > 1
    (2, 3, 5, 2, 2, 9, 9),            # kernel 5, stride 2, padding 2
    (2, 2, 3, 1, 0, 5, 6),            # no padding, C_in > 1
    (1, 2, 3, 1, 0, 6, 5),            # no padding, C_in = 1 (the input is used without a copy)
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


# every config with im2col, and the stride-1 ones also with the Fourier algorithm
CASES = [(config, "im2col") for config in CONFIGS] + [
    (config, "fourier") for config in CONFIGS if config[3] in (1, (1, 1))]
CASE_IDS = [f"{algorithm}-{config}" for config, algorithm in CASES]


def make_conv(config, rng, algorithm="auto"):
    c_in, c_out, kernel, stride, padding, _, _ = config
    conv = Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, rng=rng, algorithm=algorithm)
    conv.params["bias"][...] = rng.standard_normal(c_out)
    return conv


@pytest.mark.parametrize(("config", "algorithm"), CASES, ids=CASE_IDS)
def test_forward_equals_the_defining_sum(config, algorithm, rng):
    conv = make_conv(config, rng, algorithm)
    x = rng.standard_normal((3, config[0], config[5], config[6])).astype(np.float32)
    y = conv.forward(x)
    expected = reference_conv(x.astype(np.float64), conv.params["weights"].astype(np.float64),
                              conv.params["bias"], conv.stride, conv.padding)
    assert y.dtype == np.float32
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert conv.output_shape(x.shape[1:]) == y.shape[1:]


@pytest.mark.parametrize(("config", "algorithm"), CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(config, algorithm, rng):
    conv = make_conv(config, rng, algorithm)
    x = rng.standard_normal((2, config[0], config[5], config[6]))
    errors = check_layer(conv, x, rng)
    assert set(errors) == {"input", "weights", "bias"}
    for name, error in errors.items():
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
def test_backward_matches_the_closed_forms(algorithm, rng):
    """dL/dbias is the sum of grad_out; dL/dweights is the correlation of x with grad_out."""
    conv = Conv2D(2, 3, 3, padding=1, rng=rng, algorithm=algorithm)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    conv.forward(x, training=True)
    grad_out = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    weights_grad_array = conv.grads["weights"]
    conv.backward(grad_out.copy())
    np.testing.assert_allclose(conv.grads["bias"], grad_out.sum(axis=(0, 2, 3)), rtol=1e-5)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((3, 2, 3, 3))
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = np.einsum("bohw,bchw->oc", grad_out, x_pad[:, :, i:i + 5, j:j + 5])
    np.testing.assert_allclose(conv.grads["weights"], expected, rtol=1e-4, atol=1e-5)
    assert conv.grads["weights"] is weights_grad_array        # overwritten in place, never replaced


@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
def test_a_centred_delta_kernel_copies_the_input(algorithm, rng):
    conv = Conv2D(2, 2, 3, padding=1, algorithm=algorithm)
    conv.params["weights"][...] = 0
    conv.params["weights"][0, 0, 1, 1] = 1
    conv.params["weights"][1, 1, 1, 1] = 1
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(conv.forward(x), x, atol=1e-6)


def test_the_two_algorithms_agree_on_mnist_sized_layers(rng):
    x = rng.random((8, 32, 14, 14), dtype=np.float32)
    grad_out = rng.standard_normal((8, 64, 14, 14)).astype(np.float32)
    results = []
    for algorithm in ("im2col", "fourier"):
        conv = Conv2D(32, 64, 5, padding=2, rng=np.random.default_rng(3), algorithm=algorithm)
        y = conv.forward(x, training=True).copy()
        grad_in = conv.backward(grad_out.copy()).copy()
        results.append((y, grad_in, conv.grads["weights"].copy(), conv.grads["bias"].copy()))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * np.abs(theirs).max())


def test_auto_picks_fourier_for_stride_one_multi_channel_layers():
    assert Conv2D(32, 64, 5, padding=2).uses_fourier()
    assert Conv2D(8, 16, 3, padding=1).uses_fourier()
    assert not Conv2D(1, 32, 5, padding=2).uses_fourier()            # the first layer: im2col
    assert not Conv2D(32, 64, 3, stride=2, padding=1).uses_fourier()  # strided: im2col
    assert not Conv2D(32, 64, 1).uses_fourier()                      # 1x1 kernels: im2col
    assert not Conv2D(32, 64, 5, algorithm="im2col").uses_fourier()
    assert Conv2D(1, 8, 3, algorithm="fourier").uses_fourier()
    # a few images: the kernels' transform would dominate, so "auto" takes im2col
    assert not Conv2D(32, 64, 3, padding=1).uses_fourier(batch=FOURIER_MIN_BATCH - 1)
    assert Conv2D(32, 64, 3, padding=1).uses_fourier(batch=FOURIER_MIN_BATCH)
    assert Conv2D(32, 64, 3, padding=1, algorithm="fourier").uses_fourier(batch=1)


def test_auto_gives_the_same_numbers_for_one_image_and_for_a_batch(rng):
    """One image goes through im2col, a batch through Fourier: the outputs agree to float32 rounding."""
    conv = Conv2D(8, 16, 3, padding=1, rng=rng)
    x = rng.standard_normal((FOURIER_MIN_BATCH, 8, 14, 14)).astype(np.float32)
    batch = conv.forward(x, training=False)
    for i in (0, FOURIER_MIN_BATCH - 1):
        np.testing.assert_allclose(conv.forward(x[i:i + 1], training=False)[0], batch[i], rtol=0,
                                   atol=2e-5 * np.abs(batch).max())


def test_one_layer_handles_several_image_sizes(rng):
    for algorithm in ("im2col", "fourier"):
        conv = Conv2D(2, 3, 3, padding=1, rng=rng, algorithm=algorithm)
        for size in (6, 9, 6):
            x = rng.standard_normal((2, 2, size, size))
            expected = reference_conv(x, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
            np.testing.assert_allclose(conv.forward(x.astype(np.float32)), expected, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
def test_single_image_and_empty_batches(algorithm, rng):
    conv = Conv2D(2, 3, 3, padding=1, rng=rng, algorithm=algorithm)
    one = rng.standard_normal((1, 2, 5, 5))
    expected = reference_conv(one, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
    np.testing.assert_allclose(conv.forward(one.astype(np.float32), training=True), expected, atol=1e-5)
    empty = np.zeros((0, 2, 5, 5), dtype=np.float32)
    assert conv.forward(empty).shape == (0, 3, 5, 5)
    y = conv.forward(empty, training=True)
    assert conv.backward(np.zeros_like(y)).shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(conv.grads["weights"], 0)


def test_skipping_the_input_gradient_still_fills_the_parameter_gradients(rng):
    conv = Conv2D(1, 4, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    grad_out = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    conv.forward(x, training=True)
    conv.backward(grad_out.copy())
    expected = {k: g.copy() for k, g in conv.grads.items()}
    conv.compute_input_grad = False
    conv.forward(x, training=True)
    assert conv.backward(grad_out.copy()) is None
    for key in expected:
        np.testing.assert_array_equal(conv.grads[key], expected[key])


@pytest.mark.parametrize(("channels", "algorithm"), [(1, "im2col"), (2, "im2col"), (2, "fourier")])
def test_inference_in_chunks_equals_training_forward(channels, algorithm, rng, monkeypatch):
    conv = Conv2D(channels, 3, 3, padding=1, rng=rng, algorithm=algorithm)
    conv.params["bias"][...] = [1, -2, 3]
    x = rng.standard_normal((7, channels, 6, 6)).astype(np.float32)
    full = conv.forward(x, training=True).copy()
    # a tiny budget forces one image per chunk
    monkeypatch.setattr(conv_module, "INFERENCE_BYTES", 1)
    chunked = conv.forward(x, training=False)
    np.testing.assert_allclose(chunked, full, rtol=1e-6, atol=1e-6)
    again = conv.forward(x, training=False)
    assert again is not chunked                      # inference outputs are fresh arrays
    with pytest.raises(RuntimeError):
        conv.backward(np.ones_like(full))            # nothing cached by an inference pass


def test_training_output_is_a_reused_buffer(rng):
    conv = Conv2D(1, 2, 3, rng=rng)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    assert conv.forward(x, training=True) is conv.forward(x, training=True)


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
    with pytest.raises(ConfigError):
        conv.forward(np.zeros((2, 3, 28, 28), dtype=np.float32))


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 0}, {"kernel_size": [3]}, {"kernel_size": "3"}, {"kernel_size": True},
    {"stride": 0}, {"padding": -1}, {"init": "zeros"}, {"in_channels": 0}, {"out_channels": 2.5},
    {"algorithm": "winograd"}, {"algorithm": "fourier", "stride": 2},
])
def test_bad_arguments_raise_config_error(kwargs):
    args = {"in_channels": 1, "out_channels": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError):
        Conv2D(**args)


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
    # the first convolution needs no gradient with respect to the images
    assert model.layers[0].compute_input_grad is False
    assert model.layers[3].compute_input_grad is True
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
    """Back-propagation through conv/BN/ReLU/pool/flatten/dense agrees with finite differences."""
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
    model.backward(loss.backward())
    for name, param, grad in model.named_parameters():
        analytic = grad.copy()
        error = relative_error(analytic, numeric_gradient(f, param))
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


def test_a_cnn_learns_a_synthetic_task(rng):
    """Vertical vs horizontal vs diagonal bars: a few SGD steps must reach perfect accuracy."""
    from digitnet.nn import SGD

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
    params = model.parameters()
    first = None
    for _ in range(60):
        value = loss.forward(model.forward(images, training=True), labels)
        first = value if first is None else first
        model.backward(loss.backward())
        optimizer.step(params)
    assert value < 0.2 * first
    assert np.mean(model.predict(images) == labels) == 1.0


@pytest.mark.slow
def test_a_small_cnn_reads_real_digits(mnist_train, mnist_test):
    """400 SGD steps of a tiny CNN on 6,000 real MNIST images give > 95% on 1,000 test images."""
    from digitnet.nn import SGD

    rng = np.random.default_rng(0)
    train_x = mnist_train.images[:6000].astype(np.float32)[:, None] / 255
    train_y = mnist_train.labels[:6000]
    model = Sequential([Conv2D(1, 8, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                        Conv2D(8, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                        Flatten(), Dense(16 * 7 * 7, 10, rng=rng)], input_shape=(1, 28, 28), rng=rng)
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(lr=0.05, momentum=0.9)
    params = model.parameters()
    for _ in range(8):
        order = rng.permutation(len(train_x))
        for start in range(0, len(order) - 127, 128):
            idx = order[start:start + 128]
            loss.forward(model.forward(train_x[idx], training=True), train_y[idx])
            model.backward(loss.backward())
            optimizer.step(params)
    test_x = mnist_test.images[:1000].astype(np.float32)[:, None] / 255
    accuracy = np.mean(model.predict(test_x) == mnist_test.labels[:1000])
    assert accuracy > 0.95, accuracy


def _pooling_cnn(kernel: int, in_channels: int = 1, size: int = 12, pool=None) -> Sequential:
    """conv(kernel, "same") -> pool (2x2 max unless given) -> ReLU -> Dense, with integer conv weights
    so that the convolution's outputs tie often (ties must route the gradient as the layers do)."""
    conv = Conv2D(in_channels, 4, kernel, padding=kernel // 2, rng=np.random.default_rng(3))
    conv.params["weights"][...] = np.random.default_rng(5).integers(-1, 2, conv.params["weights"].shape)
    conv.params["bias"][...] = [0.0, 1.0, -1.0, 0.5]
    pool = pool if pool is not None else MaxPool2D(2)
    flat = 4 * (size // 2) ** 2
    layers = [conv, pool, ReLU(), Flatten(), Dense(flat, 3, rng=np.random.default_rng(4))]
    return Sequential(layers, input_shape=(in_channels, size, size))


def _layer_by_layer(model: Sequential, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Output and gradients of one training step run through each layer's own forward/backward."""
    loss = SoftmaxCrossEntropy()
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=True)
    output = h.copy()
    loss.forward(h, labels)
    grad = loss.backward()
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
        if grad is None:
            break
    return output, {name: g.copy() for name, _, g in model.named_parameters()}


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 4 * 12 * 12 * 4 + 4, 1 << 30])
@pytest.mark.parametrize("kernel", [3, 5])
def test_a_first_convolution_and_its_max_pooling_train_in_chunks_with_the_same_numbers(chunk_bytes, kernel, rng,
                                                                                        monkeypatch):
    """Sequential trains a first Conv2D and the 2x2 MaxPool2D after it together, chunk by chunk: the
    outputs and every gradient equal those of the layers run one after the other, bit for bit, for one
    image per chunk, a ragged last chunk and a single chunk."""
    monkeypatch.setattr("digitnet.nn.pooling.CHUNK_BYTES", chunk_bytes)
    x = rng.integers(0, 3, (7, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    separate, together = _pooling_cnn(kernel), _pooling_cnn(kernel)
    expected_output, expected_grads = _layer_by_layer(separate, x, labels)
    loss = SoftmaxCrossEntropy()
    output = together.forward(x, training=True)
    assert together._pooled_in_chunks == {0} and "y_chunk" in together.layers[0]._work
    np.testing.assert_array_equal(output, expected_output)
    loss.forward(output, labels)
    assert together.backward(loss.backward()) is None
    for name, _, grad in together.named_parameters():
        np.testing.assert_array_equal(grad, expected_grads[name], err_msg=name)
    # and the pooling's own backward still works after a chunked forward (its masks are whole)
    routed = together.layers[1].backward(np.ones((7, 4, 6, 6), np.float32))
    assert routed.shape == (7, 4, 12, 12) and np.count_nonzero(routed) == 7 * 4 * 36


@pytest.mark.parametrize("case", ["two input channels", "odd size", "average pooling", "input gradient",
                                  "inference"])
def test_convolution_and_pooling_run_separately_where_chunks_do_not_apply(case, rng):
    model = {"two input channels": lambda: _pooling_cnn(3, in_channels=2),
             "odd size": lambda: Sequential([Conv2D(1, 4, 3, rng=rng), MaxPool2D(2), Flatten(), Dense(144, 3, rng=rng)],
                                            input_shape=(1, 15, 15)),
             "average pooling": lambda: _pooling_cnn(3, pool=AvgPool2D(2))}.get(case, lambda: _pooling_cnn(3))()
    if case == "input gradient":
        model.layers[0].compute_input_grad = True
    x = rng.standard_normal((5, *model.input_shape)).astype(np.float32)
    output = model.forward(x, training=case != "inference")
    assert model._pooled_in_chunks == set()
    assert output.shape == (5, 3)
