"""The layer protocol's shared machinery: registry, config round trips, work buffers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import LAYER_TYPES, Dense, Dropout, Flatten, Layer, LeakyReLU, layer_from_config, register_layer
from digitnet.nn.activations import ReLU, Sigmoid, Softmax, Tanh

CORE_LAYERS = [
    Dense(5, 3, init="xavier"), Dropout(0.25), Flatten(), ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh(), Softmax(),
]


def test_core_layers_are_registered():
    for name in ("Dense", "Dropout", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax"):
        assert name in LAYER_TYPES


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
])
def test_bad_layer_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
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
        assert isinstance(rebuilt, Double)
        np.testing.assert_array_equal(rebuilt.forward(np.ones(3)), [2, 2, 2])
    finally:
        del LAYER_TYPES["Double"]


def test_work_buffer_is_reused_until_the_shape_or_dtype_changes():
    layer = Layer()
    first = layer.work_buffer("y", (2, 3), np.dtype(np.float32))
    assert layer.work_buffer("y", (2, 3), np.dtype(np.float32)) is first
    assert layer.work_buffer("y", (4, 3), np.dtype(np.float32)) is not first
    assert layer.work_buffer("y", (4, 3), np.dtype(np.float64)).dtype == np.float64
    layer.release_buffers()
    assert layer._work == {}


def test_training_outputs_reuse_a_buffer_and_inference_outputs_are_fresh():
    relu = ReLU()
    x = np.array([[1.0, -1.0]], dtype=np.float32)
    train_a = relu.forward(x, training=True)
    train_b = relu.forward(x, training=True)
    assert train_a is train_b                       # valid until the next training forward
    infer_a = relu.forward(x, training=False)
    infer_b = relu.forward(x, training=False)
    assert infer_a is not infer_b and infer_a is not train_a


def test_base_layer_is_the_identity_and_counts_parameters():
    layer = Layer()
    x = np.arange(6.0).reshape(2, 3)
    assert layer.forward(x) is x and layer.backward(x) is x
    assert layer.output_shape((3,)) == (3,)
    assert layer.num_params() == 0 and layer.num_buffer_values() == 0
    assert Dense(5, 3).num_params() == 5 * 3 + 3


def test_describe_and_repr_are_short_and_informative():
    assert Dense(784, 128, init="xavier").describe() == "784->128 (xavier)"
    assert Dropout(0.2).describe() == "rate 0.2"
    assert LeakyReLU(0.1).describe() == "slope 0.1"
    assert ReLU().describe() == ""
    assert repr(Dense(2, 3)) == "Dense(in_features=2, out_features=3, init='he')"


def test_release_buffers_drops_cached_activations_too(rng):
    dense, relu = Dense(3, 2, rng=rng), ReLU()
    relu.forward(dense.forward(rng.random((4, 3), dtype=np.float32), training=True), training=True)
    assert dense._x is not None and relu._y is not None
    dense.release_buffers()
    relu.release_buffers()
    assert dense._x is None and relu._y is None and relu._work == {}
