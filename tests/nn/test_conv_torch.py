"""Cross-checks against PyTorch: Conv2D, the poolings and BatchNorm give the same outputs and
gradients as torch.nn.functional, both the reference layers and their kernels (skipped without
torch, a failure under DIGITNET_STRICT=1)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.kernels import fast_twin, speed_up
from digitnet.nn import Dense, Flatten, ReLU, Sequential, SoftmaxCrossEntropy
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import Conv2D
from digitnet.nn.pooling import AvgPool2D, MaxPool2D
from tests.conftest import require_module

pytestmark = pytest.mark.torch

TOLERANCE = 1e-5

#: the reference layer itself, or its kernel sharing its arrays
LAYER_IMPLEMENTATIONS = {"reference": lambda layer: layer, "fast": fast_twin}
MODEL_IMPLEMENTATIONS = {"reference": lambda model: model, "fast": lambda model: speed_up(model)[0]}


@pytest.fixture
def torch():
    return require_module("torch")


def assert_close(ours, theirs, tolerance=TOLERANCE):
    """Equal up to ``tolerance`` relative to the array's scale (float32 sums of ~100 terms)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance * scale)


def run_layer(layer, x, grad_out):
    """Our forward (training) and backward: ``(y, dL/dx)``."""
    y = layer.forward(x, training=True).copy()
    grad_in = layer.backward(grad_out.copy())
    return y, grad_in


# (in_channels, out_channels, kernel, stride, padding, height, width)
CONV_CONFIGS = [
    (1, 8, 5, 1, 2, 28, 28),       # MNIST first layer
    (8, 16, 3, 1, 1, 14, 14),      # a second layer, "same" padding
    (4, 6, 5, 2, 2, 13, 11),       # stride 2, odd sizes
    (3, 5, 3, 2, 0, 9, 9),
    (2, 3, (3, 5), (1, 2), (2, 1), 10, 12),
    (32, 64, 5, 1, 2, 14, 14),     # MNIST second layer (Fourier under "auto")
    (6, 4, (5, 3), 1, (1, 2), 9, 10),
]


# the reference computes by im2col whatever the algorithm setting; the kernel by each algorithm
CONV_CASES = [("reference", config, "auto") for config in CONV_CONFIGS] + [
    ("fast", config, "im2col") for config in CONV_CONFIGS] + [
    ("fast", config, "fourier") for config in CONV_CONFIGS if config[3] == 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("implementation", "config", "algorithm"), CONV_CASES,
                         ids=[f"{i}-{a}-{c}" for i, c, a in CONV_CASES])
def test_conv2d_matches_torch(torch, implementation, config, algorithm, dtype, rng):
    c_in, c_out, kernel, stride, padding, height, width = config
    conv = Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, rng=rng, algorithm=algorithm)
    conv.params["bias"][...] = rng.standard_normal(c_out)
    if dtype == np.float64:
        conv.params = {k: v.astype(np.float64) for k, v in conv.params.items()}
        conv.grads = {k: v.astype(np.float64) for k, v in conv.grads.items()}
    conv = LAYER_IMPLEMENTATIONS[implementation](conv)
    x = rng.standard_normal((4, c_in, height, width)).astype(dtype)
    grad_out = rng.standard_normal((4, *conv.output_shape(x.shape[1:]))).astype(dtype)
    y, grad_in = run_layer(conv, x, grad_out)

    x_t = torch.tensor(x, requires_grad=True)
    w_t = torch.tensor(conv.params["weights"], requires_grad=True)
    b_t = torch.tensor(conv.params["bias"], requires_grad=True)
    y_t = torch.nn.functional.conv2d(x_t, w_t, b_t, stride=stride, padding=padding)
    y_t.backward(torch.tensor(grad_out))
    assert_close(y, y_t)
    assert_close(grad_in, x_t.grad)
    assert_close(conv.grads["weights"], w_t.grad)
    assert_close(conv.grads["bias"], b_t.grad)


# (kernel, stride, height, width)
POOL_CONFIGS = [(2, 2, 28, 28), (2, 2, 7, 7), (3, 2, 9, 8), (3, 1, 6, 6), ((2, 3), (2, 1), 8, 9),
                ((3, 1), (1, 2), 8, 7)]


@pytest.mark.parametrize("implementation", list(LAYER_IMPLEMENTATIONS))
@pytest.mark.parametrize("config", POOL_CONFIGS, ids=str)
def test_poolings_match_torch(torch, implementation, config, rng):
    kernel, stride, height, width = config
    x = rng.standard_normal((3, 4, height, width)).astype(np.float32)
    x[0, 0] = np.maximum(x[0, 0], 0)              # ReLU-like zeros: ties inside windows
    x[1, 1] = 1.0                                 # a constant channel: every window a tie
    implement = LAYER_IMPLEMENTATIONS[implementation]
    for ours, theirs in ((implement(MaxPool2D(kernel, stride)), torch.nn.functional.max_pool2d),
                         (implement(AvgPool2D(kernel, stride)), torch.nn.functional.avg_pool2d)):
        grad_out = rng.standard_normal((3, *ours.output_shape(x.shape[1:]))).astype(np.float32)
        y, grad_in = run_layer(ours, x, grad_out)
        x_t = torch.tensor(x, requires_grad=True)
        y_t = theirs(x_t, kernel, stride)
        y_t.backward(torch.tensor(grad_out))
        assert_close(y, y_t)
        assert_close(grad_in, x_t.grad)        # max pool: same single winner on ties


@pytest.mark.parametrize("implementation", list(LAYER_IMPLEMENTATIONS))
@pytest.mark.parametrize("shape", [(16, 6), (8, 4, 5, 5)])
def test_batchnorm_matches_torch(torch, implementation, shape, rng):
    features = shape[1]
    ours = LAYER_IMPLEMENTATIONS[implementation](BatchNorm(features, momentum=0.1, eps=1e-5))
    ours.params["gamma"][...] = rng.uniform(0.5, 2, features)
    ours.params["beta"][...] = rng.standard_normal(features)
    theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(features, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.params["gamma"]))
        theirs.bias.copy_(torch.tensor(ours.params["beta"]))
    for step in range(3):                          # several steps: running statistics accumulate
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        grad_out = rng.standard_normal(shape).astype(np.float32)
        y, grad_in = run_layer(ours, x, grad_out)
        x_t = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        y_t = theirs(x_t)
        y_t.backward(torch.tensor(grad_out))
        assert_close(y, y_t)
        assert_close(grad_in, x_t.grad)
        assert_close(ours.grads["gamma"], theirs.weight.grad)
        assert_close(ours.grads["beta"], theirs.bias.grad)
        assert_close(ours.buffers["running_mean"], theirs.running_mean)
        assert_close(ours.buffers["running_var"], theirs.running_var)
    theirs.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close(ours.forward(x, training=False), theirs(torch.tensor(x)))


@pytest.mark.parametrize("implementation", list(MODEL_IMPLEMENTATIONS))
@pytest.mark.parametrize("fused", [False, True], ids=["relu-before-pool", "pool-after-conv"])
def test_whole_cnn_matches_torch(torch, implementation, fused, rng):
    """The MNIST architecture end to end: same logits, loss and every parameter gradient. With the
    pooling right after the first convolution the kernels train that pair fused, chunk by chunk."""
    first = [Conv2D(1, 8, 5, padding=2, rng=rng), MaxPool2D(2), ReLU()] if fused else \
        [Conv2D(1, 8, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2)]
    ours = Sequential([*first, Conv2D(8, 16, 5, padding=2, rng=rng), BatchNorm(16), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(16 * 7 * 7, 32, rng=rng), ReLU(), Dense(32, 10, rng=rng)],
                      input_shape=(1, 28, 28))
    ours = MODEL_IMPLEMENTATIONS[implementation](ours)
    nn = torch.nn
    first_t = [nn.Conv2d(1, 8, 5, padding=2), nn.MaxPool2d(2), nn.ReLU()] if fused else \
        [nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
    theirs = nn.Sequential(*first_t, nn.Conv2d(8, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))
    pairs = []        # (our param, torch param, our->torch layout)
    for layer, module in zip(ours.layers, theirs, strict=True):
        if isinstance(layer, Conv2D):
            pairs += [(layer, "weights", module.weight, False), (layer, "bias", module.bias, False)]
        elif isinstance(layer, BatchNorm):
            pairs += [(layer, "gamma", module.weight, False), (layer, "beta", module.bias, False)]
        elif isinstance(layer, Dense):    # ours is [in, out], torch's Linear is [out, in]
            pairs += [(layer, "weights", module.weight, True), (layer, "bias", module.bias, False)]
    with torch.no_grad():
        for layer, key, param, transpose in pairs:
            value = layer.params[key].T if transpose else layer.params[key]
            param.copy_(torch.tensor(np.ascontiguousarray(value)))
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 16)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(ours.forward(x, training=True), labels)
    ours.backward(loss.backward())
    assert getattr(ours, "_pooled_in_chunks", set()) == ({0} if fused and implementation == "fast" else set())
    logits_t = theirs(torch.tensor(x))
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    assert value == pytest.approx(loss_t.item(), rel=1e-5)
    for layer, key, param, transpose in pairs:
        grad = param.grad.detach().numpy()
        assert_close(layer.grads[key], grad.T if transpose else grad)
