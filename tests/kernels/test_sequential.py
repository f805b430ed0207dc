"""FastSequential: the skipped input gradient of the first layers, and a convolution (the first, or a
Fourier one) and its 2x2 max pooling trained together chunk by chunk (the numbers of the layers run one
by one: bit for bit, but for the first convolution's weight gradient, summed in another order)."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.fourier as fourier_module
import digitnet.kernels.pooling as pooling_module
from digitnet.kernels import FastSequential, speed_up
from digitnet.kernels.parallel import Workers
from digitnet.nn import SGD, Dense, Flatten, ReLU, Sequential, SoftmaxCrossEntropy
from digitnet.nn.conv import Conv2D
from digitnet.nn.pooling import AvgPool2D, MaxPool2D


def test_the_first_layer_skips_the_input_gradient(rng):
    model = speed_up(Sequential([Flatten(), Dense(16, 4, rng=rng), ReLU(), Dense(4, 3, rng=rng)],
                                input_shape=(4, 4)))[0]
    assert isinstance(model, FastSequential) and model.first_trained == 1
    # Flatten has no kernel (it stays the reference layer, never asked for a gradient)
    assert [getattr(layer, "compute_input_grad", None) for layer in model.layers] == [None, False, True, True]
    out = model.forward(rng.random((5, 4, 4), dtype=np.float32), training=True)
    assert model.backward(np.ones_like(out)) is None
    assert np.any(model.layers[1].grads["weights"] != 0)


def test_every_layer_up_to_the_first_trained_one_skips_it(rng):
    model = speed_up(Sequential([ReLU(), MaxPool2D(2), Conv2D(1, 2, 3, rng=rng), ReLU(), Flatten(), Dense(8, 2)],
                                input_shape=(1, 8, 8)))[0]
    assert model.first_trained == 2
    assert [getattr(layer, "compute_input_grad", None) for layer in model.layers] == [False, False, False, True,
                                                                                      None, True]
    out = model.forward(rng.standard_normal((3, 1, 8, 8)).astype(np.float32), training=True)
    assert model.backward(np.ones_like(out)) is None
    assert np.any(model.layers[2].grads["weights"] != 0)


def test_the_reference_model_is_not_changed_by_speeding_it_up(rng):
    reference = Sequential([Dense(6, 4, rng=rng), ReLU(), Dense(4, 2, rng=rng)], input_shape=(6,))
    speed_up(reference)
    assert not hasattr(reference.layers[0], "compute_input_grad")
    out = reference.forward(rng.random((2, 6), dtype=np.float32), training=True)
    assert reference.backward(np.ones_like(out)).shape == (2, 6)


def test_mnist_cnn_skips_only_the_first_convolution_input_gradient():
    model = speed_up(Sequential([
        Conv2D(1, 32, 5, padding=2), ReLU(), MaxPool2D(2),
        Conv2D(32, 64, 5, padding=2), ReLU(), MaxPool2D(2),
        Flatten(), Dense(3136, 128), ReLU(), Dense(128, 10),
    ], input_shape=(1, 28, 28)))[0]
    # the first convolution needs no gradient with respect to the images
    assert model.layers[0].compute_input_grad is False
    assert model.layers[3].compute_input_grad is True
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert model.forward(x).shape == (2, 10)


def _pooling_cnn(kernel: int, in_channels: int = 1, size: int = 12, pool=None) -> FastSequential:
    """conv(kernel, "same") -> pool (2x2 max unless given) -> ReLU -> Dense, with integer conv weights
    so that the convolution's outputs tie often (ties must route the gradient as the layers do)."""
    conv = Conv2D(in_channels, 4, kernel, padding=kernel // 2, rng=np.random.default_rng(3))
    conv.params["weights"][...] = np.random.default_rng(5).integers(-1, 2, conv.params["weights"].shape)
    conv.params["bias"][...] = [0.0, 1.0, -1.0, 0.5]
    pool = pool if pool is not None else MaxPool2D(2)
    flat = 4 * (size // 2) ** 2
    layers = [conv, pool, ReLU(), Flatten(), Dense(flat, 3, rng=np.random.default_rng(4))]
    return speed_up(Sequential(layers, input_shape=(in_channels, size, size)))[0]


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
    """FastSequential trains a first Conv2D and the 2x2 MaxPool2D after it together, chunk by chunk: the
    outputs and every gradient equal those of the layers run one after the other, for one image per
    chunk, a ragged last chunk and a single chunk. Bit for bit, but for the convolution's own gradients:
    the pair's product sums over the output positions in parity-major order, which rounds differently."""
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", chunk_bytes)
    x = rng.integers(0, 3, (7, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    separate, together = _pooling_cnn(kernel), _pooling_cnn(kernel)
    expected_output, expected_grads = _layer_by_layer(separate, x, labels)
    loss = SoftmaxCrossEntropy()
    output = together.forward(x, training=True)
    assert together._pooled_in_chunks == {0} and any(n.startswith("y_chunk@") for n in together.layers[0]._work)
    np.testing.assert_array_equal(output, expected_output)
    loss.forward(output, labels)
    assert together.backward(loss.backward()) is None
    for name, _, grad in together.named_parameters():
        if name.startswith("layers.0."):
            assert not np.array_equal(grad, 0)
            np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(grad, expected_grads[name], err_msg=name)
    # and the pooling's own backward still works after a chunked forward (its masks are whole, and
    # parity-major): it routes any gradient to the same inputs as after its own forward
    upstream = rng.standard_normal((7, 4, 6, 6)).astype(np.float32)
    routed = together.layers[1].backward(upstream)
    np.testing.assert_array_equal(routed, separate.layers[1].backward(upstream))
    assert np.count_nonzero(routed) == 7 * 4 * 36


def test_the_chunked_pair_keeps_only_chunk_sized_convolution_outputs(rng, monkeypatch):
    monkeypatch.setattr(pooling_module, "CHUNK_BYTES", 2 * 4 * 12 * 12 * 4)   # two images' outputs per chunk
    model = _pooling_cnn(3)
    model.forward(rng.random((7, 1, 12, 12), dtype=np.float32), training=True)
    conv = model.layers[0]
    chunks = [buf for name, buf in conv._work.items() if name.startswith("y_chunk@")]     # one per thread
    assert chunks and all(buf.shape == (2, 4, 12, 12) for buf in chunks)
    assert "y" not in conv._work                         # the batch-sized convolution output never exists


@pytest.mark.parametrize("case", ["two input channels", "odd size", "average pooling", "input gradient",
                                  "inference", "winograd", "empty batch"])
def test_convolution_and_pooling_run_separately_where_chunks_do_not_apply(case, rng):
    model = {"two input channels": lambda: _pooling_cnn(3, in_channels=2),
             "odd size": lambda: speed_up(Sequential([Conv2D(1, 4, 3, rng=rng), MaxPool2D(2), Flatten(),
                                                      Dense(144, 3, rng=rng)], input_shape=(1, 15, 15)))[0],
             "average pooling": lambda: _pooling_cnn(3, pool=AvgPool2D(2))}.get(case, lambda: _pooling_cnn(3))()
    if case == "input gradient":
        model.layers[0].compute_input_grad = True
    if case == "winograd":
        model.layers[0].algorithm = "winograd"
    batch = 0 if case == "empty batch" else 5
    x = rng.standard_normal((batch, *model.input_shape)).astype(np.float32)
    output = model.forward(x, training=case != "inference")
    assert model._pooled_in_chunks == set()
    assert output.shape == (batch, 3)


def _two_pair_cnn() -> Sequential:
    """conv 1->3 (im2col) - 2x2 max pool - ReLU - conv 3->4 by Fourier - 2x2 max pool - ReLU - Dense, with
    integer weights so that both convolutions' outputs tie often."""
    first = Conv2D(1, 3, 3, padding=1, rng=np.random.default_rng(3))
    second = Conv2D(3, 4, 3, padding=1, rng=np.random.default_rng(6), algorithm="fourier")
    for conv, seed in ((first, 5), (second, 7)):
        conv.params["weights"][...] = np.random.default_rng(seed).integers(-1, 2, conv.params["weights"].shape)
    layers = [first, MaxPool2D(2), ReLU(), second, MaxPool2D(2), ReLU(), Flatten(),
              Dense(4 * 3 * 3, 3, rng=np.random.default_rng(4))]
    return speed_up(Sequential(layers, input_shape=(1, 12, 12)))[0]


@pytest.mark.parametrize("fourier_chunk_bytes", [1, 6 * 4 * 3 * 8 * 2, 1 << 30])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_fourier_convolution_and_its_max_pooling_train_in_chunks_with_the_same_numbers(fourier_chunk_bytes,
                                                                                         threads, rng, monkeypatch):
    """The pooling takes each chunk of the Fourier inverse transform, and backward transforms each chunk of
    the gradient it routes: the output, dL/dx of the Fourier layer and every weight gradient equal those of
    the layers run one by one, bit for bit (the first, im2col, pair's own gradients to rounding: see above),
    for one image per chunk, ragged chunks and a single chunk."""
    monkeypatch.setattr(fourier_module, "CHUNK_BYTES", fourier_chunk_bytes)
    x = rng.integers(0, 3, (7, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    separate, together = _two_pair_cnn(), _two_pair_cnn()
    expected_output, expected_grads = _layer_by_layer(separate, x, labels)
    workers = Workers(threads)
    together.use_workers(workers)
    try:
        output = together.forward(x, training=True)
        assert together._pooled_in_chunks == {0, 3}
        assert "y" not in together.layers[3]._work          # the batch-sized Fourier output never exists
        np.testing.assert_array_equal(output, expected_output)
        loss = SoftmaxCrossEntropy()
        loss.forward(output, labels)
        assert together.backward(loss.backward()) is None
    finally:
        workers.close()
    for name, _, grad in together.named_parameters():
        if name.startswith("layers.0."):
            np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(grad, expected_grads[name], err_msg=name)
    np.testing.assert_array_equal(together.layers[3].work_buffer("grad_in", (7, 3, 6, 6), np.float32),
                                  separate.layers[3]._work["grad_in"])


def test_a_fused_forward_is_forgotten_by_the_next_unfused_one(rng):
    model = _pooling_cnn(3)
    x = rng.random((4, 1, 12, 12), dtype=np.float32)
    model.forward(x, training=True)
    assert model._pooled_in_chunks == {0}
    model.forward(x, training=False)
    assert model._pooled_in_chunks == set()


def test_fast_models_train_the_reference_models_arrays(rng):
    """speed_up shares the arrays: a few steps of the fast model move the reference model's weights."""
    reference = Sequential([Conv2D(1, 4, 3, padding=1, rng=rng), MaxPool2D(2), ReLU(), Flatten(),
                            Dense(4 * 4 * 4, 3, rng=rng)], input_shape=(1, 8, 8), rng=rng)
    fast, loss, optimizer = speed_up(reference, SoftmaxCrossEntropy(), SGD(0.1, momentum=0.9))
    x = rng.random((12, 1, 8, 8), dtype=np.float32)
    labels = rng.integers(0, 3, 12)
    before = reference.forward(x).copy()
    first = loss.forward(fast.forward(x, training=True), labels)
    for _ in range(10):
        loss.forward(fast.forward(x, training=True), labels)
        fast.backward(loss.backward())
        optimizer.step(fast.parameters())
    assert loss.forward(fast.forward(x), labels) < first
    np.testing.assert_allclose(reference.forward(x), fast.forward(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(reference.forward(x), before)


@pytest.mark.slow
def test_a_small_cnn_reads_real_digits(mnist_train, mnist_test):
    """400 SGD steps of a tiny CNN on 6,000 real MNIST images give > 95% on 1,000 test images."""
    rng = np.random.default_rng(0)
    train_x = mnist_train.images[:6000].astype(np.float32)[:, None] / 255
    train_y = mnist_train.labels[:6000]
    reference = Sequential([Conv2D(1, 8, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                            Conv2D(8, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                            Flatten(), Dense(16 * 7 * 7, 10, rng=rng)], input_shape=(1, 28, 28), rng=rng)
    model, loss, optimizer = speed_up(reference, SoftmaxCrossEntropy(), SGD(lr=0.05, momentum=0.9))
    params = model.parameters()               # the kernels write gradients into the same arrays every step
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
    assert np.mean(reference.predict(test_x) == mnist_test.labels[:1000]) == accuracy
