"""FastConv2D: tuned im2col and the Fourier convolution against the defining sum and finite differences,
the choice between them ("auto", FOURIER_MIN_BATCH), reused buffers, in-place gradients, the skipped
input gradient and inference in chunks."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.conv as conv_module
from digitnet.kernels import fast_twin
from digitnet.kernels.conv import FOURIER_MIN_BATCH, FastConv2D
from digitnet.nn.conv import Conv2D
from digitnet.nn.gradcheck import check_layer
from tests.nn.test_conv import CONFIGS, reference_conv

TOLERANCE = 1e-6

# every config with im2col, and the stride-1 ones also with the Fourier algorithm
CASES = [(config, "im2col") for config in CONFIGS] + [
    (config, "fourier") for config in CONFIGS if config[3] in (1, (1, 1))]
CASE_IDS = [f"{algorithm}-{config}" for config, algorithm in CASES]


def fast_conv(*args, **kwargs) -> FastConv2D:
    conv = fast_twin(Conv2D(*args, **kwargs))
    assert type(conv) is FastConv2D
    return conv


def make_conv(config, rng, algorithm="auto"):
    c_in, c_out, kernel, stride, padding, _, _ = config
    conv = fast_conv(c_in, c_out, kernel, stride=stride, padding=padding, rng=rng, algorithm=algorithm)
    conv.params["bias"][...] = rng.standard_normal(c_out)
    return conv


@pytest.mark.parametrize(("config", "algorithm"), CASES, ids=CASE_IDS)
def test_forward_equals_the_defining_sum(config, algorithm, rng):
    conv = make_conv(config, rng, algorithm)
    x = rng.standard_normal((3, config[0], config[5], config[6])).astype(np.float32)
    expected = reference_conv(x.astype(np.float64), conv.params["weights"].astype(np.float64),
                              conv.params["bias"], conv.stride, conv.padding)
    for training in (True, False):
        y = conv.forward(x, training=training)
        assert y.dtype == np.float32
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("config", "algorithm"), CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(config, algorithm, rng):
    conv = make_conv(config, rng, algorithm)
    x = rng.standard_normal((2, config[0], config[5], config[6]))
    errors = check_layer(conv, x, rng)
    assert set(errors) == {"input", "weights", "bias"}
    for name, error in errors.items():
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize(("channels", "algorithm"), [(2, "im2col"), (2, "fourier"), (1, "im2col")])
def test_backward_matches_the_closed_forms_and_writes_into_the_gradient_arrays(channels, algorithm, rng):
    """dL/dbias is the sum of grad_out; dL/dweights is the correlation of x with grad_out; the kernel
    writes both into the arrays already in ``grads`` (which a reference model shares)."""
    conv = fast_conv(channels, 3, 3, padding=1, rng=rng, algorithm=algorithm)
    x = rng.standard_normal((2, channels, 5, 5)).astype(np.float32)
    conv.forward(x, training=True)
    grad_out = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    weights_grad_array, bias_grad_array = conv.grads["weights"], conv.grads["bias"]
    conv.backward(grad_out.copy())
    np.testing.assert_allclose(conv.grads["bias"], grad_out.sum(axis=(0, 2, 3)), rtol=1e-5)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((3, channels, 3, 3))
    for i in range(3):
        for j in range(3):
            expected[:, :, i, j] = np.einsum("bohw,bchw->oc", grad_out, x_pad[:, :, i:i + 5, j:j + 5])
    np.testing.assert_allclose(conv.grads["weights"], expected, rtol=1e-4, atol=1e-5)
    assert conv.grads["weights"] is weights_grad_array        # overwritten in place, never replaced
    assert conv.grads["bias"] is bias_grad_array


@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
def test_a_centred_delta_kernel_copies_the_input(algorithm, rng):
    conv = fast_conv(2, 2, 3, padding=1, algorithm=algorithm)
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
        conv = fast_conv(32, 64, 5, padding=2, rng=np.random.default_rng(3), algorithm=algorithm)
        y = conv.forward(x, training=True).copy()
        grad_in = conv.backward(grad_out.copy()).copy()
        results.append((y, grad_in, conv.grads["weights"].copy(), conv.grads["bias"].copy()))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * np.abs(theirs).max())


def test_auto_picks_fourier_for_stride_one_multi_channel_layers():
    assert fast_conv(32, 64, 5, padding=2).algorithm_for() == "fourier"
    assert fast_conv(8, 16, 3, padding=1).algorithm_for() == "fourier"
    assert fast_conv(1, 32, 5, padding=2).algorithm_for() != "fourier"            # the first layer: im2col
    assert fast_conv(32, 64, 3, stride=2, padding=1).algorithm_for() != "fourier"  # strided: im2col
    assert fast_conv(32, 64, 1).algorithm_for() != "fourier"                      # 1x1 kernels: im2col
    assert fast_conv(32, 64, 2).algorithm_for() != "fourier"                      # 2x2 (4 offsets < 9): im2col
    assert fast_conv(32, 64, 5, algorithm="im2col").algorithm_for() != "fourier"
    assert fast_conv(1, 8, 3, algorithm="fourier").algorithm_for() == "fourier"
    # a few images: the kernels' transform would dominate, so "auto" takes im2col
    assert fast_conv(32, 64, 3, padding=1).algorithm_for(batch=FOURIER_MIN_BATCH - 1) != "fourier"
    assert fast_conv(32, 64, 3, padding=1).algorithm_for(batch=FOURIER_MIN_BATCH) == "fourier"
    assert fast_conv(32, 64, 3, padding=1, algorithm="fourier").algorithm_for(batch=1) == "fourier"
    assert fast_conv(32, 64, 3, padding=1, algorithm="im2col").algorithm_for(batch=10 * FOURIER_MIN_BATCH) != "fourier"


@pytest.mark.parametrize(("batch", "algorithm"), [(FOURIER_MIN_BATCH - 1, "im2col"), (FOURIER_MIN_BATCH, "fourier")])
def test_auto_trains_through_the_algorithm_it_names(batch, algorithm, rng):
    conv = fast_conv(2, 3, 3, padding=1, rng=rng)
    conv.forward(rng.standard_normal((batch, 2, 6, 6)).astype(np.float32), training=True)
    assert conv._cache["algorithm"] == algorithm


def test_auto_gives_the_same_numbers_for_one_image_and_for_a_batch(rng):
    """One image goes through im2col, a batch through Fourier: the outputs agree to float32 rounding."""
    conv = fast_conv(8, 16, 3, padding=1, rng=rng)
    x = rng.standard_normal((FOURIER_MIN_BATCH, 8, 14, 14)).astype(np.float32)
    batch = conv.forward(x, training=False)
    for i in (0, FOURIER_MIN_BATCH - 1):
        np.testing.assert_allclose(conv.forward(x[i:i + 1], training=False)[0], batch[i], rtol=0,
                                   atol=2e-5 * np.abs(batch).max())


def test_one_layer_handles_several_image_sizes_with_one_plan_per_size(rng):
    for algorithm in ("im2col", "fourier"):
        conv = fast_conv(2, 3, 3, padding=1, rng=rng, algorithm=algorithm)
        for size in (6, 9, 6):
            x = rng.standard_normal((2, 2, size, size))
            expected = reference_conv(x, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
            np.testing.assert_allclose(conv.forward(x.astype(np.float32)), expected, atol=1e-5)
        assert len(conv._plans) == (2 if algorithm == "fourier" else 0)


@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
def test_single_image_and_empty_batches(algorithm, rng):
    conv = fast_conv(2, 3, 3, padding=1, rng=rng, algorithm=algorithm)
    one = rng.standard_normal((1, 2, 5, 5))
    expected = reference_conv(one, conv.params["weights"], conv.params["bias"], (1, 1), (1, 1))
    np.testing.assert_allclose(conv.forward(one.astype(np.float32), training=True), expected, atol=1e-5)
    conv.backward(np.ones((1, 3, 5, 5), dtype=np.float32))
    assert np.any(conv.grads["weights"] != 0)
    empty = np.zeros((0, 2, 5, 5), dtype=np.float32)
    assert conv.forward(empty).shape == (0, 3, 5, 5)
    y = conv.forward(empty, training=True)
    assert conv.backward(np.zeros_like(y)).shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(conv.grads["weights"], 0)         # no images: no gradient
    np.testing.assert_array_equal(conv.grads["bias"], 0)


@pytest.mark.parametrize(("channels", "algorithm"), [(1, "im2col"), (2, "im2col"), (2, "fourier")])
def test_skipping_the_input_gradient_still_fills_the_parameter_gradients(channels, algorithm, rng):
    conv = fast_conv(channels, 4, 3, padding=1, rng=rng, algorithm=algorithm)
    x = rng.standard_normal((2, channels, 6, 6)).astype(np.float32)
    grad_out = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    conv.forward(x, training=True)
    assert conv.backward(grad_out.copy()) is not None
    expected = {k: g.copy() for k, g in conv.grads.items()}
    conv.compute_input_grad = False
    conv.forward(x, training=True)
    assert conv.backward(grad_out.copy()) is None
    for key in expected:
        np.testing.assert_array_equal(conv.grads[key], expected[key])


@pytest.mark.parametrize(("channels", "algorithm"), [(1, "im2col"), (2, "im2col"), (2, "fourier")])
def test_inference_in_chunks_equals_training_forward(channels, algorithm, rng, monkeypatch):
    conv = fast_conv(channels, 3, 3, padding=1, rng=rng, algorithm=algorithm)
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


def test_inference_scratch_arrays_are_chunk_sized(rng, monkeypatch):
    """With a budget of 3 images' patches, a batch of 7 goes as 3 + 3 + 1 images: no batch-sized patches."""
    conv = fast_conv(2, 3, 3, padding=1, rng=rng, algorithm="im2col")
    per_image = 6 * 6 * 2 * 3 * 3 * 4                    # H_out*W_out*C_in*kH*kW float32 bytes
    monkeypatch.setattr(conv_module, "INFERENCE_BYTES", 3 * per_image)
    shapes = []
    work_buffer = conv.work_buffer

    def recording(name, shape, dtype):
        if name == "inference_cols":
            shapes.append(shape[0])
        return work_buffer(name, shape, dtype)

    monkeypatch.setattr(conv, "work_buffer", recording)
    y = conv.forward(rng.standard_normal((7, 2, 6, 6)).astype(np.float32), training=False)
    assert shapes == [3, 3, 1] and y.shape == (7, 3, 6, 6)
    assert conv._cache is None                                # an inference pass keeps nothing for backward


def test_training_output_is_a_reused_buffer(rng):
    conv = fast_conv(1, 2, 3, rng=rng)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    first = conv.forward(x, training=True)
    assert first is conv.forward(2 * x, training=True)          # valid until the next training forward
    assert conv.forward(x, training=False) is not conv.forward(x, training=False)


@pytest.mark.parametrize("channels, algorithm", [
    (1, "im2col"), (2, "fourier"), (2, "im2col")])
def test_float64_inputs_give_float64_outputs_and_gradients(channels, algorithm, rng):
    conv = fast_conv(channels, 2, 3, rng=rng, algorithm=algorithm)
    y = conv.forward(rng.standard_normal((1, channels, 4, 4)), training=True)
    assert y.dtype == np.float64
    assert conv.backward(np.ones_like(y)).dtype == np.float64


def test_release_buffers_drops_the_scratch_arrays_and_the_cache(rng):
    conv = fast_conv(2, 3, 3, padding=1, rng=rng)
    conv.forward(rng.standard_normal((2, 2, 5, 5)).astype(np.float32), training=True)
    assert conv._work and conv._cache is not None
    conv.release_buffers()
    assert conv._work == {} and conv._cache is None
    with pytest.raises(RuntimeError):
        conv.backward(np.ones((2, 3, 5, 5), dtype=np.float32))


@pytest.mark.parametrize("kernel", [3, 5])
def test_parity_major_patches_hold_the_same_patches_by_position_parity(kernel, rng):
    """For a convolution trained with its 2x2 pooling, the patches of one input channel are stored with
    each image's positions ordered (h % 2, w % 2, h // 2, w // 2); the product then writes the output
    parity-major, which is the plain output reordered, bit for bit."""
    conv = fast_conv(1, 4, kernel, padding=kernel // 2, rng=rng, algorithm="im2col")
    x = rng.random((3, 1, 8, 6), dtype=np.float32)
    x_pad = conv._padded_input(x, np.float32, "")
    plain = conv._im2col(x_pad, 8, 6, "", parity_major=False).copy()              # [K + 1, B, 48]
    parity = conv._im2col(x_pad, 8, 6, "", parity_major=True)
    k = kernel * kernel
    expected = plain.reshape(k + 1, 3, 4, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4).reshape(k + 1, 3, 48)
    np.testing.assert_array_equal(parity, expected)
    w_bias = conv._weights_with_bias(np.float32)
    y_plain = np.matmul(w_bias, plain.transpose(1, 0, 2)).reshape(3, 4, 4, 2, 3, 2)
    y_parity = np.matmul(w_bias, parity.transpose(1, 0, 2)).reshape(3, 4, 2, 2, 4, 3)
    np.testing.assert_array_equal(y_parity, y_plain.transpose(0, 1, 3, 5, 2, 4))
