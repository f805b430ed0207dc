"""speed_up, fast_twin and resolve: swapping the kernels in, sharing arrays, choosing the implementation."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.kernels import FastSequential, fast_twin, resolve, speed_up
from digitnet.kernels.dense import FastDense
from digitnet.kernels.losses import FastSoftmaxCrossEntropy
from digitnet.kernels.optim import FastAdam
from digitnet.nn import Adam, Dense, Dropout, Flatten, MeanSquaredError, ReLU, Sequential, SoftmaxCrossEntropy
from digitnet.nn.gelu import GELU
from digitnet.nn.rmsprop import RMSprop


def test_resolve_takes_the_argument_then_the_environment_then_fast(monkeypatch):
    monkeypatch.delenv("DIGITNET_KERNELS", raising=False)
    assert resolve() == "fast"
    monkeypatch.setenv("DIGITNET_KERNELS", "Reference")
    assert resolve() == "reference"
    assert resolve("fast") == "fast"
    monkeypatch.setenv("DIGITNET_KERNELS", "")
    assert resolve() == "fast"
    assert resolve(" REFERENCE ") == "reference"


@pytest.mark.parametrize("choice", ["turbo", "", "numpy"])
def test_resolve_rejects_anything_else(choice, monkeypatch):
    monkeypatch.delenv("DIGITNET_KERNELS", raising=False)
    with pytest.raises(ConfigError, match="unknown kernels .*: choose fast or reference"):
        resolve(choice)
    monkeypatch.setenv("DIGITNET_KERNELS", "turbo")
    with pytest.raises(ConfigError):
        resolve()


def test_speed_up_swaps_in_the_kernels_and_keeps_none(rng):
    model = Sequential([Flatten(), Dense(4, 3, rng=rng), GELU(), Dropout(0.5), Dense(3, 2, rng=rng)],
                       input_shape=(2, 2), rng=rng)
    fast, loss, optimizer = speed_up(model, SoftmaxCrossEntropy(), Adam())
    assert isinstance(fast, FastSequential) and fast is not model
    assert [type(layer).__name__ for layer in fast.layers] == ["Flatten", "FastDense", "GELU", "FastDropout",
                                                               "FastDense"]
    assert fast.layers[0] is model.layers[0] and fast.layers[2] is model.layers[2]   # no kernel: the same layer
    assert fast.input_shape == model.input_shape and fast.rng is model.rng
    assert fast.layers[3].rng is model.rng                          # dropout masks from the model's generator
    assert type(loss) is FastSoftmaxCrossEntropy and type(optimizer) is FastAdam
    assert speed_up(model)[1:] == (None, None)
    assert speed_up(None, MeanSquaredError())[0] is None


def test_speed_up_of_a_fast_model_is_the_model_itself(rng):
    fast = speed_up(Sequential.from_spec("4-3-2", rng=rng))[0]
    assert speed_up(fast)[0] is fast


def test_fast_twin_of_things_without_a_kernel_is_the_thing_itself():
    for obj in (GELU(), RMSprop(), MeanSquaredError(), Flatten(), "not a layer"):
        assert fast_twin(obj) is obj
    assert type(fast_twin(Dense(2, 2))) is FastDense


def test_the_fast_and_reference_models_agree_and_share_parameters(rng):
    model = Sequential.from_spec("10-8-3", "relu", dropout=0.0, rng=rng)
    fast = speed_up(model)[0]
    x = rng.random((5, 10), dtype=np.float32)
    np.testing.assert_allclose(fast.forward(x), model.forward(x), rtol=1e-6)
    assert fast.config() == model.config() and fast.summary() == model.summary()
    for (_, p, g), (_, q, h) in zip(model.named_parameters(), fast.named_parameters(), strict=True):
        assert p is q and g is h
    model.load_state_dict({k: np.zeros_like(v) for k, v in model.state_dict().items()})
    np.testing.assert_array_equal(fast.forward(x), 0)             # loading into one loads into both


def test_reference_and_fast_training_steps_give_the_same_weights(rng):
    x = rng.random((16, 10), dtype=np.float32)
    labels = rng.integers(0, 3, 16)
    results = []
    for fast in (False, True):
        model = Sequential([Dense(10, 8, rng=np.random.default_rng(1)), ReLU(),
                            Dense(8, 3, rng=np.random.default_rng(2))], input_shape=(10,))
        loss, optimizer = SoftmaxCrossEntropy(0.1), Adam(0.01)
        if fast:
            model, loss, optimizer = speed_up(model, loss, optimizer)
        for _ in range(5):
            loss.forward(model.forward(x, training=True), labels)
            model.backward(loss.backward())
            optimizer.step(model.parameters())
        results.append([p.copy() for _, p, _ in model.named_parameters()])
    for ref, fast in zip(*results, strict=True):
        np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)
