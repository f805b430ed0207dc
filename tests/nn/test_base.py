"""The layer protocol's shared machinery: registration, settings, config round trips, the reference protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import LAYER_TYPES, Dense, Dropout, Flatten, Layer, LeakyReLU, layer_from_config, register_layer
from digitnet.nn.activations import ReLU, Sigmoid, Softmax, Tanh
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import Conv2D
from digitnet.nn.gelu import GELU
from digitnet.nn.pooling import AvgPool2D, MaxPool2D

CORE_LAYERS = [
    Dense(5, 3, init="xavier"), Dropout(0.25), Flatten(), ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh(), Softmax(),
]


def test_core_layers_are_registered():
    for name in ("Dense", "Dropout", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "GELU",
                 "Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm"):
        assert name in LAYER_TYPES
        assert LAYER_TYPES[name].layer_type == name


@pytest.mark.parametrize("layer", CORE_LAYERS, ids=lambda layer: type(layer).__name__)
def test_config_round_trips_through_json(layer):
    config = json.loads(json.dumps(layer.config()))
    rebuilt = layer_from_config(config, np.random.default_rng(1))
    assert type(rebuilt) is type(layer)
    assert rebuilt.config() == layer.config()
    assert {k: v.shape for k, v in rebuilt.params.items()} == {k: v.shape for k, v in layer.params.items()}


@pytest.mark.parametrize("config", [
    "Dense",
    {"in_features": 3},
    {"type": "NoSuchLayer"},
    {"type": "Dense", "in_features": 3},                          # missing out_features
    {"type": "Dense", "in_features": 3, "out_features": 2, "bogus": 1},
    {"type": "Dense", "in_features": "three", "out_features": 2},
    {"type": "Dense", "in_features": 3, "out_features": 0},
    {"type": "Dense", "in_features": 3, "out_features": 2, "init": "zeros"},
    {"type": "Dropout", "rate": 1.0},
    {"type": "LeakyReLU", "slope": -0.1},
    {"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3, 3]},
    {"type": "MaxPool2D", "kernel_size": 2, "stride": 0},
])
def test_bad_layer_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
        layer_from_config(config)


@pytest.mark.parametrize(("config", "message"), [
    ({"type": "NoSuchLayer"}, r"unknown layer type 'NoSuchLayer' \(known: .*Dense"),
    ({"type": "Dense", "in_features": 3, "out_features": 2, "bogus": 1}, r"bad config for layer Dense"),
    ({"type": "Dense", "in_features": "three", "out_features": 2}, r"Dense in_features must be a number"),
    ({"type": "Dropout", "rate": 1.0}, r"Dropout rate must be \[0, 1\), got 1.0"),
    ({"type": "BatchNorm", "num_features": 4, "momentum": 1.5}, r"BatchNorm momentum must be \[0, 1\]"),
])
def test_bad_layer_configs_say_what_is_wrong(config, message):
    with pytest.raises(ConfigError, match=message):
        layer_from_config(config)


def test_layer_from_config_passes_the_rng_to_layers_that_draw_random_numbers():
    config = {"type": "Dense", "in_features": 4, "out_features": 3}
    first = layer_from_config(config, np.random.default_rng(7))
    second = layer_from_config(config, np.random.default_rng(7))
    other = layer_from_config(config, np.random.default_rng(8))
    np.testing.assert_array_equal(first.params["weights"], second.params["weights"])
    assert not np.array_equal(first.params["weights"], other.params["weights"])


def test_register_layer_makes_a_custom_layer_rebuildable():
    @register_layer
    class Double(Layer):
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, grad_out):
            return 2 * grad_out

    try:
        rebuilt = layer_from_config({"type": "Double"})
        assert isinstance(rebuilt, Double) and rebuilt.layer_type == "Double"
        np.testing.assert_array_equal(rebuilt.forward(np.ones(3)), [2, 2, 2])
        assert rebuilt.config() == {"type": "Double"}                  # no registered settings
    finally:
        del LAYER_TYPES["Double"]


def test_configure_checks_settings_against_the_registry_and_sets_them():
    dense = Dense(3, 2)
    dense.configure(in_features=7, out_features="4", init="Xavier")
    assert (dense.in_features, dense.out_features, dense.init) == (7, 4, "xavier")
    with pytest.raises(ConfigError, match="Dense has no setting units"):
        dense.configure(units=3)
    with pytest.raises(ConfigError, match="Dense out_features must be >= 1"):
        dense.configure(in_features=3, out_features=0)


def test_base_layer_is_the_identity_and_counts_parameters():
    layer = Layer()
    x = np.arange(6.0).reshape(2, 3)
    assert layer.forward(x) is x and layer.backward(x) is x
    assert layer.output_shape((3,)) == (3,)
    assert layer.num_params() == 0 and layer.num_buffer_values() == 0
    assert Dense(5, 3).num_params() == 5 * 3 + 3
    assert BatchNorm(4).num_params() == 8 and BatchNorm(4).num_buffer_values() == 8


def test_describe_and_repr_are_short_and_informative():
    assert Dense(784, 128, init="xavier").describe() == "784->128 (xavier)"
    assert Dropout(0.2).describe() == "rate 0.2"
    assert LeakyReLU(0.1).describe() == "slope 0.1"
    assert ReLU().describe() == ""
    assert repr(Dense(2, 3)) == "Dense(in_features=2, out_features=3, init='he')"
    assert repr(MaxPool2D(2)) == "MaxPool2D(kernel_size=2, stride=2)"


def test_release_buffers_drops_cached_activations_too(rng):
    dense, relu = Dense(3, 2, rng=rng), ReLU()
    relu.forward(dense.forward(rng.random((4, 3), dtype=np.float32), training=True), training=True)
    assert dense.x is not None and relu.y is not None
    dense.release_buffers()
    relu.release_buffers()
    assert dense.x is None and relu.y is None


REFERENCE_LAYERS = {
    "dense": (lambda: Dense(6, 4), (6,)), "dropout": (lambda: Dropout(0.5), (6,)), "flatten": (Flatten, (2, 3, 3)),
    "relu": (ReLU, (6,)), "leaky_relu": (lambda: LeakyReLU(0.1), (6,)), "sigmoid": (Sigmoid, (6,)),
    "tanh": (Tanh, (6,)), "softmax": (Softmax, (6,)), "gelu": (GELU, (6,)),
    "batchnorm": (lambda: BatchNorm(3), (3, 4, 4)), "conv": (lambda: Conv2D(3, 2, 3, padding=1), (3, 5, 5)),
    "conv_one_channel": (lambda: Conv2D(1, 2, 3), (1, 5, 5)), "maxpool": (lambda: MaxPool2D(2), (3, 4, 4)),
    "avgpool": (lambda: AvgPool2D(3, 1), (2, 5, 5)),
}
TRAINED = [name for name, (make, _) in REFERENCE_LAYERS.items() if make().params]


@pytest.mark.parametrize("name", list(REFERENCE_LAYERS))
def test_reference_layers_never_write_into_their_inputs(name, rng):
    """The textbook protocol: forward and backward read x and grad_out and return results of their own."""
    make, shape = REFERENCE_LAYERS[name]
    layer = make()
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    x_before = x.copy()
    y = layer.forward(x, training=True)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    grad_before = grad.copy()
    grad_in = layer.backward(grad)
    assert grad_in.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(grad, grad_before)


@pytest.mark.parametrize("name", TRAINED)
def test_reference_backward_rebinds_the_gradients(name, rng):
    """Reference backward puts new arrays into ``grads``: an array read before backward is stale."""
    make, shape = REFERENCE_LAYERS[name]
    layer = make()
    before = dict(layer.grads)
    layer.forward(rng.standard_normal((4, *shape)).astype(np.float32), training=True)
    grad_in = layer.backward(np.ones((4, *layer.output_shape(shape)), dtype=np.float32))
    assert grad_in is not None
    for key, old in before.items():
        assert layer.grads[key] is not old
        np.testing.assert_array_equal(old, 0)
        assert layer.grads[key].shape == layer.params[key].shape
