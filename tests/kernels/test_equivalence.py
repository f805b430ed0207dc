"""Every kernel equals its reference: outputs, input gradients, parameter gradients, optimizer steps.

Compared in float64 (kernels and references both follow the input's dtype), over odd shapes, a single
sample, an empty batch and ties. The loop over ``KERNELS`` makes a new kernel without a case here fail.
Every test runs twice: with the kernels on one thread, and on three worker threads with every pass
split however small (so each parallel path is checked on these small shapes).
"""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.kernels import KERNELS, fast_twin, parallel, speed_up
from digitnet.kernels.buffers import Buffered
from digitnet.kernels.optim import BlockedUpdates
from digitnet.nn import (
    SGD,
    Adam,
    AdamW,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)
from digitnet.nn.gradcheck import to_float64

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True, params=["one thread", "split on three threads"])
def kernel_threads(request, monkeypatch):
    """Run each test with serial kernels, then with every pass cut in parts on three threads."""
    if request.param == "one thread":
        monkeypatch.setenv(parallel.ENV_VAR, "1")
        yield parallel.SERIAL
        return
    workers = parallel.Workers(3)
    real_speed_up = speed_up

    def speed_up_on_three_threads(model, loss=None, optimizer=None, threads=None):
        model, loss, optimizer = real_speed_up(model, loss, optimizer, threads=3)
        model.use_workers(workers)     # on, as in training
        return model, loss, optimizer

    monkeypatch.setitem(globals(), "speed_up", speed_up_on_three_threads)
    monkeypatch.setattr(parallel, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(parallel, "MIN_PART_FLOPS", 0)
    monkeypatch.setenv(parallel.ENV_VAR, "3")
    monkeypatch.setattr(Buffered, "workers", workers)
    monkeypatch.setattr(BlockedUpdates, "workers", workers)
    yield workers
    workers.close()

# reference class -> [(constructor kwargs, input shape per sample), ...]
LAYER_CASES = {
    Dense: [({"in_features": 7, "out_features": 5}, (7,)), ({"in_features": 1, "out_features": 3}, (1,))],
    ReLU: [({}, (6,)), ({}, (3, 5, 4))],
    LeakyReLU: [({"slope": 0.1}, (6,)), ({"slope": 0.0}, (2, 3, 3))],
    Sigmoid: [({}, (6,))],
    Tanh: [({}, (2, 4, 3))],
    Softmax: [({}, (10,))],
    Dropout: [({"rate": 0.3}, (9,))],
    BatchNorm: [({"num_features": 4}, (4,)), ({"num_features": 3}, (3, 5, 4))],
    Conv2D: [
        ({"in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1}, (1, 8, 8)),
        ({"in_channels": 3, "out_channels": 5, "kernel_size": 3, "padding": 1, "algorithm": "fourier"}, (3, 7, 9)),
        ({"in_channels": 3, "out_channels": 5, "kernel_size": 5, "padding": 2, "algorithm": "fourier"}, (3, 10, 10)),
        ({"in_channels": 2, "out_channels": 3, "kernel_size": (2, 3), "stride": 2, "padding": (1, 0)}, (2, 9, 8)),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "algorithm": "im2col"}, (3, 6, 7)),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1, "algorithm": "winograd"}, (3, 9, 7)),
        ({"in_channels": 2, "out_channels": 5, "kernel_size": 3, "padding": 1}, (2, 20, 21)),      # auto: winograd
    ],
    MaxPool2D: [({"kernel_size": 2}, (3, 8, 6)), ({"kernel_size": 3, "stride": 2}, (2, 7, 9)),
                ({"kernel_size": 2}, (2, 7, 5))],
    AvgPool2D: [({"kernel_size": 2}, (2, 6, 6)), ({"kernel_size": 3, "stride": 1}, (1, 5, 7))],
}


def test_every_kernel_has_a_case_here():
    covered = set(LAYER_CASES) | {SoftmaxCrossEntropy, SGD, Adam, AdamW}
    assert set(KERNELS) <= covered, f"kernels without an equivalence case: {set(KERNELS) - covered}"


def _pair(cls, kwargs, rng):
    """A float64 reference layer and its kernel, with the same parameters (independent arrays)."""
    extra = {"rng": np.random.default_rng(3)} if cls.needs_rng else {}
    reference = to_float64(cls(**kwargs, **extra))
    twin = to_float64(cls(**kwargs, **extra))
    fast = fast_twin(twin)
    assert type(fast) is KERNELS[cls]
    for store in ("params", "buffers"):
        for key, value in getattr(reference, store).items():
            getattr(fast, store)[key] = value.copy()
    return reference, fast


def _inputs(shape, batch, rng, ties):
    x = rng.standard_normal((batch, *shape))
    if ties:  # blocks of equal values, and zeros, as after a ReLU
        x = np.round(x * 2) / 2
        x[x < 0] = 0
    return x


CASES = [(cls, kwargs, shape) for cls, cases in LAYER_CASES.items() for kwargs, shape in cases]


@pytest.mark.parametrize("cls, kwargs, shape", CASES, ids=lambda v: getattr(v, "__name__", None) or str(v))
@pytest.mark.parametrize("batch, ties", [(5, False), (1, False), (18, True)])
def test_kernel_forward_and_backward_equal_the_reference(cls, kwargs, shape, batch, ties, rng):
    reference, fast = _pair(cls, kwargs, rng)
    x = _inputs(shape, batch, rng, ties)
    if cls is Dropout:
        mask = (rng.random(x.shape) >= kwargs["rate"]) / (1 - kwargs["rate"])
        reference.fixed_mask = fast.fixed_mask = mask
    y_ref = reference.forward(x.copy(), training=True)
    y_fast = np.array(fast.forward(x.copy(), training=True))
    np.testing.assert_allclose(y_fast, y_ref, **TOL)
    grad = rng.standard_normal(y_ref.shape)
    dx_ref = reference.backward(grad.copy())
    dx_fast = fast.backward(grad.copy())
    np.testing.assert_allclose(dx_fast, dx_ref, **TOL)
    for key in reference.params:
        np.testing.assert_allclose(fast.grads[key], reference.grads[key], **TOL, err_msg=key)
    for key in reference.buffers:      # BatchNorm's running statistics move the same way
        np.testing.assert_allclose(fast.buffers[key], reference.buffers[key], rtol=1e-6, err_msg=key)
    # inference too (BatchNorm's running statistics, convolution chunks)
    np.testing.assert_allclose(fast.forward(x.copy()), reference.forward(x.copy()), rtol=1e-6, atol=1e-6)


# BatchNorm has no statistics to take of an empty batch (both raise), Softmax no row to normalise
@pytest.mark.parametrize("cls, kwargs, shape", [c for c in CASES if c[0] not in (Softmax, BatchNorm)],
                         ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_an_empty_batch_passes_through_both(cls, kwargs, shape, rng):
    reference, fast = _pair(cls, kwargs, rng)
    x = np.zeros((0, *shape))
    y_ref = reference.forward(x, training=True)
    y_fast = fast.forward(x, training=True)
    assert y_fast.shape == y_ref.shape


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_kernel_equals_the_reference(smoothing, reduction, rng):
    reference = SoftmaxCrossEntropy(smoothing, reduction)
    fast = fast_twin(SoftmaxCrossEntropy(smoothing, reduction))
    logits = rng.standard_normal((13, 10)) * 5
    labels = rng.integers(0, 10, 13)
    assert fast.forward(logits, labels) == pytest.approx(reference.forward(logits, labels), rel=1e-12)
    np.testing.assert_allclose(fast.backward(), reference.backward(), **TOL)


OPTIMIZERS = [
    lambda: SGD(0.1), lambda: SGD(0.05, momentum=0.9),
    lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: Adam(1e-3), lambda: Adam(1e-3, weight_decay=0.01), lambda: AdamW(1e-3, weight_decay=0.05),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_optimizer_kernels_take_the_reference_steps(make, rng, monkeypatch):
    import digitnet.kernels.optim as fast_optim

    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 16)       # so that the large matrix is updated in blocks
    shapes = [(70, 9), (9,), (3, 2, 2, 2)]
    params = [rng.standard_normal(s) for s in shapes]
    ref_params = [p.copy() for p in params]
    reference, fast = make(), fast_twin(make())
    for _ in range(4):
        grads = [rng.standard_normal(s) for s in shapes]
        reference.step(list(zip(ref_params, grads, strict=True)))
        fast.step(list(zip(params, [g.copy() for g in grads], strict=True)))
    for p, q in zip(params, ref_params, strict=True):
        np.testing.assert_allclose(p, q, **TOL)
    assert set(fast.state_arrays()) == set(reference.state_arrays())   # the same checkpoint slots


def _cnn(rng_seed: int):
    layers = [Conv2D(1, 4, 3, padding=1, rng=np.random.default_rng(rng_seed)), MaxPool2D(2), ReLU(),
              Conv2D(4, 6, 3, padding=1, algorithm="fourier", rng=np.random.default_rng(rng_seed + 1)),
              BatchNorm(6), MaxPool2D(2), ReLU(), Flatten(),
              Dense(6 * 3 * 3, 10, rng=np.random.default_rng(rng_seed + 2))]
    return Sequential(layers, input_shape=(1, 12, 12))


def test_the_fused_convolution_and_pooling_equal_the_reference_model(rng):
    reference = _cnn(0)
    fast = speed_up(_cnn(0))[0]
    for layer in reference.layers + fast.layers:
        to_float64(layer)
    x = rng.random((20, 1, 12, 12))
    labels = rng.integers(0, 10, 20)
    loss_ref, loss_fast = SoftmaxCrossEntropy(), fast_twin(SoftmaxCrossEntropy())
    out_ref = reference.forward(x, training=True)
    out_fast = fast.forward(x, training=True)
    assert fast._pooled_in_chunks == {0}                     # the first pair did train fused
    np.testing.assert_allclose(out_fast, out_ref, **TOL)
    loss_ref.forward(out_ref, labels)
    loss_fast.forward(out_fast, labels)
    reference.backward(loss_ref.backward())
    fast.backward(loss_fast.backward())
    for (name, _, g_ref), (_, _, g_fast) in zip(reference.named_parameters(), fast.named_parameters(), strict=True):
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-9, atol=1e-12, err_msg=name)


def test_speed_up_shares_the_parameters_and_keeps_config_and_state(rng):
    model = Sequential.from_spec("784-16-10", rng=np.random.default_rng(0))
    fast, _, _ = speed_up(model)
    assert fast.config() == model.config()
    for (_, p, _), (_, q, _) in zip(model.named_parameters(), fast.named_parameters(), strict=True):
        assert p is q
    assert fast.summary() == model.summary()


@pytest.mark.slow
def test_short_training_gives_the_same_loss_curve_either_way(mnist_train):
    from digitnet.config import TrainConfig, build_loss, build_model, build_optimizer, seed_generators

    config = TrainConfig(arch="784-64-10", optimizer="momentum", lr=0.05)
    curves = []
    for fast in (False, True):
        rngs = seed_generators(0)
        model, loss, optimizer = build_model(config, rngs["init"], rngs["dropout"]), build_loss(config), \
            build_optimizer(config)
        if fast:
            model, loss, optimizer = speed_up(model, loss, optimizer)
        losses = []
        for start in range(0, 128 * 60, 128):
            x = mnist_train.images[start:start + 128].reshape(-1, 784).astype(np.float32) / 255
            value = loss.forward(model.forward(x, training=True), mnist_train.labels[start:start + 128])
            model.backward(loss.backward())
            optimizer.step(model.parameters())
            losses.append(value)
        curves.append(np.array(losses))
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4)
    assert curves[0][-1] < 0.6 * curves[0][0]                # and it learned
