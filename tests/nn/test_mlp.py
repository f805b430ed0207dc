"""MLPs from a size list: parse_spec, mlp_layers and Sequential.from_spec (layers, inits, validation)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import Dense, Dropout, Sequential, parse_spec
from digitnet.nn.mlp import mlp_layers


def layer_types(layers):
    return [type(layer).__name__ for layer in layers]


def test_from_spec_builds_dense_activation_dropout_blocks():
    model = Sequential.from_spec("784-128-64-10", "relu", dropout=0.2)
    assert layer_types(model.layers) == ["Dense", "ReLU", "Dropout", "Dense", "ReLU", "Dropout", "Dense"]
    assert model.input_shape == (784,)
    assert model.output_shapes() == [(128,), (128,), (128,), (64,), (64,), (64,), (10,)]
    assert model.output_kind == "logits"


def test_from_spec_picks_init_by_activation_and_accepts_a_size_list():
    sigmoid = Sequential.from_spec([20, 8, 3], "sigmoid", output_activation="sigmoid")
    assert layer_types(sigmoid.layers) == ["Dense", "Sigmoid", "Dense", "Sigmoid"]
    assert sigmoid.layers[0].init == "xavier" and sigmoid.output_kind == "sigmoid"
    assert Sequential.from_spec("20-8-3", "Leaky-ReLU").layers[0].init == "he"
    assert Sequential.from_spec("20-8-3", "gelu").layers[0].init == "he"
    assert Sequential.from_spec("20-8-3", "tanh", init="lecun").layers[2].init == "lecun"
    assert Sequential.from_spec("20-3", output_activation="softmax").output_kind == "softmax"


def test_mlp_layers_returns_the_layers_and_the_input_shape():
    layers, input_shape = mlp_layers("10-6-4", "tanh", dropout=0.5, rng=np.random.default_rng(0))
    assert input_shape == (10,)
    assert layer_types(layers) == ["Dense", "Tanh", "Dropout", "Dense"]
    assert [(d.in_features, d.out_features) for d in layers if isinstance(d, Dense)] == [(10, 6), (6, 4)]
    assert next(d for d in layers if isinstance(d, Dropout)).rate == 0.5


def test_mlp_layers_draw_their_weights_from_the_generator():
    first, _ = mlp_layers("10-6-4", rng=np.random.default_rng(1))
    again, _ = mlp_layers("10-6-4", rng=np.random.default_rng(1))
    other, _ = mlp_layers("10-6-4", rng=np.random.default_rng(2))
    np.testing.assert_array_equal(first[0].params["weights"], again[0].params["weights"])
    assert not np.array_equal(first[0].params["weights"], other[0].params["weights"])


@pytest.mark.parametrize(("spec", "sizes"), [
    ("784-128-64-10", [784, 128, 64, 10]), ("784,10", [784, 10]), ("784x32x10", [784, 32, 10]),
    (" 784 - 100 - 10 ", [784, 100, 10]), ("784X10", [784, 10]),
])
def test_parse_spec_accepts_sizes(spec, sizes):
    assert parse_spec(spec) == sizes


@pytest.mark.parametrize("spec", ["", "784", "784-", "-784-10", "784--10", "784-abc-10", "784-0-10",
                                  "784-1.5-10", "784-+5-10", "784 10", "784-١٠"])
def test_parse_spec_errors_raise_config_error(spec):
    with pytest.raises(ConfigError, match="bad architecture"):
        parse_spec(spec)


@pytest.mark.parametrize("kwargs", [
    {"spec": "784-10", "activation": "softmax"}, {"spec": "784-10", "activation": "swish"},
    {"spec": "784-10", "output_activation": "relu"}, {"spec": "784-10", "dropout": 1.0},
    {"spec": "784-10", "init": "zeros"}, {"spec": [784]}, {"spec": [784, 0, 10]}, {"spec": ["a", 10]},
    {"spec": "784-10", "dropout": "lots"}, {"spec": "784-10", "activation": None},
])
def test_from_spec_rejects_bad_arguments(kwargs):
    spec = kwargs.pop("spec")
    with pytest.raises(ConfigError):
        Sequential.from_spec(spec, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"activation": "softmax"}, r"unknown hidden activation 'softmax' \(choose from relu, .*gelu"),
    ({"output_activation": "relu"}, r"output activation must be sigmoid or softmax"),
    ({"dropout": 1.0}, r"dropout rate must be in \[0, 1\)"),
    ({"dropout": "lots"}, "dropout rate must be a number"),
    ({"activation": "swish"}, r"unknown activation 'swish'"),
])
def test_from_spec_errors_name_the_registered_choices(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mlp_layers("784-10", **{"activation": "relu", **kwargs})


def test_same_seed_gives_the_same_model():
    first = Sequential.from_spec("30-10-4", rng=np.random.default_rng(5))
    second = Sequential.from_spec("30-10-4", rng=np.random.default_rng(5))
    for (_, a, _), (_, b, _) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        np.testing.assert_array_equal(a, b)
