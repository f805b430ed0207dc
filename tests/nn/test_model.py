"""Sequential: construction from specs and configs, round trips, summary, predictions, gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import (
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MeanSquaredError,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
    parse_spec,
)
from digitnet.nn.gradcheck import check_model


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


# -- construction -------------------------------------------------------------------------------
def test_from_spec_builds_dense_activation_dropout_blocks():
    model = Sequential.from_spec("784-128-64-10", "relu", dropout=0.2)
    assert layer_types(model) == ["Dense", "ReLU", "Dropout", "Dense", "ReLU", "Dropout", "Dense"]
    assert model.input_shape == (784,)
    assert model.output_shapes() == [(128,), (128,), (128,), (64,), (64,), (64,), (10,)]
    assert model.output_kind == "logits"


def test_from_spec_picks_init_by_activation_and_accepts_a_size_list():
    sigmoid = Sequential.from_spec([20, 8, 3], "sigmoid", output_activation="sigmoid")
    assert layer_types(sigmoid) == ["Dense", "Sigmoid", "Dense", "Sigmoid"]
    assert sigmoid.layers[0].init == "xavier" and sigmoid.output_kind == "sigmoid"
    assert Sequential.from_spec("20-8-3", "Leaky-ReLU").layers[0].init == "he"
    assert Sequential.from_spec("20-8-3", "tanh", init="lecun").layers[2].init == "lecun"
    assert Sequential.from_spec("20-3", output_activation="softmax").output_kind == "softmax"


@pytest.mark.parametrize(("spec", "sizes"), [
    ("784-128-64-10", [784, 128, 64, 10]), ("784,10", [784, 10]), ("784x32x10", [784, 32, 10]),
    (" 784 - 100 - 10 ", [784, 100, 10]),
])
def test_parse_spec_accepts_sizes(spec, sizes):
    assert parse_spec(spec) == sizes


@pytest.mark.parametrize("spec", ["", "784", "784-", "-784-10", "784--10", "784-abc-10", "784-0-10",
                                  "784-1.5-10", "784-+5-10", "784 10"])
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


def test_layers_that_do_not_fit_together_raise_config_error():
    with pytest.raises(ConfigError, match="layer 2"):
        Sequential([Dense(784, 10), ReLU(), Dense(20, 5)])
    with pytest.raises(ConfigError, match="expects 784 inputs"):
        Sequential([Dense(784, 10)], input_shape=(1, 28, 28))
    with pytest.raises(ConfigError):
        Sequential([])


def test_same_seed_gives_the_same_model():
    first = Sequential.from_spec("30-10-4", rng=np.random.default_rng(5))
    second = Sequential.from_spec("30-10-4", rng=np.random.default_rng(5))
    for (_, a, _), (_, b, _) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


# -- config and state round trips ---------------------------------------------------------------
def test_config_round_trip_gives_identical_outputs(rng):
    model = Sequential.from_spec("30-16-8-5", "leaky_relu", dropout=0.3, output_activation="softmax", rng=rng)
    config = json.loads(json.dumps(model.config()))                    # must be plain JSON
    rebuilt = Sequential.from_config(config, rng=np.random.default_rng(99))
    assert rebuilt.config() == model.config()
    x = rng.random((6, 30), dtype=np.float32)
    assert not np.allclose(rebuilt.forward(x), model.forward(x))       # fresh weights differ ...
    rebuilt.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))  # ... until loaded


def test_from_config_with_hand_written_layer_configs(rng):
    config = {"input_shape": [1, 8, 8], "layers": [
        {"type": "Flatten"},
        {"type": "Dense", "in_features": 64, "out_features": 12, "init": "xavier"},
        {"type": "Tanh"},
        {"type": "Dropout", "rate": 0.1},
        {"type": "Dense", "in_features": 12, "out_features": 3},
    ]}
    model = Sequential.from_config(config, rng=rng)
    assert layer_types(model) == ["Flatten", "Dense", "Tanh", "Dropout", "Dense"]
    assert model.forward(rng.random((2, 1, 8, 8), dtype=np.float32)).shape == (2, 3)
    assert model.num_params() == 64 * 12 + 12 + 12 * 3 + 3


@pytest.mark.parametrize("config", [
    [], {"layers": "Dense"}, {"layers": [{"type": "Conv9D"}]}, {"layers": [{"type": "ReLU"}], "input_shape": [0]},
    {"layers": [{"type": "ReLU"}], "input_shape": "784"}, {"layers": [{"type": "ReLU"}], "input_shape": []},
    {"input_shape": [10], "layers": [{"type": "Dense", "in_features": 5, "out_features": 2}]},
])
def test_bad_model_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
        Sequential.from_config(config)


def test_load_state_dict_copies_in_place_and_checks_names_and_shapes(rng):
    model = Sequential.from_spec("6-4-2", rng=rng)
    weights = model.layers[0].params["weights"]
    state = {k: np.ones_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model.layers[0].params["weights"] is weights and np.all(weights == 1)
    with pytest.raises(ConfigError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if k != "layers.2.bias"})
    with pytest.raises(ConfigError, match="unexpected"):
        model.load_state_dict({**state, "layers.9.weights": np.ones(3)})
    with pytest.raises(ConfigError, match="expected shape"):
        model.load_state_dict({**state, "layers.0.weights": np.ones((4, 6))})


def test_named_parameters_are_the_layers_own_arrays(rng):
    model = Sequential.from_spec("6-4-2", rng=rng)
    names = [name for name, _, _ in model.named_parameters()]
    assert names == ["layers.0.weights", "layers.0.bias", "layers.2.weights", "layers.2.bias"]
    assert model.parameters()[2][0] is model.layers[2].params["weights"]
    assert model.parameters()[2][1] is model.layers[2].grads["weights"]


# -- summary ------------------------------------------------------------------------------------
def test_summary_reads_like_keras_with_the_right_numbers():
    text = Sequential.from_spec("784-128-64-10", dropout=0.2).summary()
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Type", "Output", "shape", "Params"]
    assert lines[3].split() == ["dense_0", "Dense", "784->128", "(he)", "[None,", "128]", "100,480"]  # 784*128+128
    assert lines[4].split() == ["relu_0", "ReLU", "[None,", "128]", "0"]
    assert lines[5].split() == ["dropout_0", "Dropout", "rate", "0.2", "[None,", "128]", "0"]
    assert lines[6].split()[-1] == "8,256"                                  # 128*64+64
    assert lines[9].split()[:4] == ["dense_2", "Dense", "64->10", "(he)"]
    assert lines[9].split()[-1] == "650"                                    # 64*10+10
    assert "Total params: 109,386" in lines
    assert "Trainable params: 109,386" in lines
    assert "Non-trainable params: 0" in lines
    assert lines[-1] == "Output: logits [None, 10]"
    assert "in_features=" not in text


def test_layer_names_are_numbered_per_type():
    model = Sequential([Flatten(), Dense(4, 3), LeakyReLU(), Dense(3, 2), Softmax()], input_shape=(2, 2))
    assert model.layer_names() == ["flatten_0", "dense_0", "leaky_relu_0", "dense_1", "softmax_0"]


# -- predictions --------------------------------------------------------------------------------
@pytest.mark.parametrize("output_activation", [None, "sigmoid", "softmax"])
def test_predict_proba_rows_sum_to_one(output_activation, rng):
    model = Sequential.from_spec("12-8-5", output_activation=output_activation, rng=rng)
    x = rng.random((7, 12), dtype=np.float32)
    probs = model.predict_proba(x, batch_size=3)
    assert probs.shape == (7, 5) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x, batch_size=3), probs.argmax(axis=1))
    np.testing.assert_allclose(model.predict_proba(x, batch_size=100), probs, rtol=1e-6)


def test_predict_proba_of_logits_is_their_softmax(rng):
    model = Sequential.from_spec("12-5", rng=rng)
    x = rng.random((4, 12), dtype=np.float32)
    logits = model.forward(x).astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-5)


def test_predict_proba_of_a_saturated_sigmoid_row_is_uniform():
    model = Sequential([Dense(2, 3), Sigmoid()], input_shape=(2,))
    model.layers[0].params["bias"][...] = -1000                  # every sigmoid output is exactly 0
    probs = model.predict_proba(np.zeros((2, 2), dtype=np.float32))
    np.testing.assert_allclose(probs, 1 / 3)


def test_predictions_of_an_empty_batch():
    model = Sequential.from_spec("12-5")
    empty = np.zeros((0, 12), dtype=np.float32)
    assert model.predict_proba(empty).shape == (0, 5)
    assert model.predict(empty).shape == (0,)


def test_inference_ignores_dropout_and_training_mode_applies_it(rng):
    model = Sequential.from_spec("20-50-4", dropout=0.5, rng=rng)
    x = rng.random((3, 20), dtype=np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x))
    assert not np.allclose(model.forward(x, training=True), model.forward(x))


def test_forward_all_returns_the_input_and_every_layer_output(rng):
    model = Sequential.from_spec("12-8-5", rng=rng)
    x = rng.random((2, 12), dtype=np.float32)
    outputs = model.forward_all(x)
    assert [o.shape for o in outputs] == [(2, 12), (2, 8), (2, 8), (2, 5)]
    np.testing.assert_array_equal(outputs[2], np.maximum(outputs[1], 0))
    np.testing.assert_array_equal(outputs[-1], model.forward(x))


# -- training-side behaviour --------------------------------------------------------------------
def test_the_first_layer_skips_the_input_gradient(rng):
    model = Sequential([Flatten(), Dense(16, 4, rng=rng), ReLU(), Dense(4, 3, rng=rng)], input_shape=(4, 4))
    assert [layer.compute_input_grad for layer in model.layers] == [False, False, True, True]
    out = model.forward(rng.random((5, 4, 4), dtype=np.float32), training=True)
    assert model.backward(np.ones_like(out)) is None
    assert np.any(model.layers[1].grads["weights"] != 0)


def test_training_step_is_float32_throughout(rng):
    model = Sequential.from_spec("12-8-5", dropout=0.2, rng=rng)
    loss = SoftmaxCrossEntropy()
    out = model.forward(rng.random((4, 12), dtype=np.float32), training=True)
    loss.forward(out, np.array([0, 1, 2, 3]))
    model.backward(loss.backward())
    assert out.dtype == np.float32
    assert all(p.dtype == np.float32 and g.dtype == np.float32 for _, p, g in model.named_parameters())


@pytest.mark.parametrize(("layers", "loss"), [
    ([Dense(6, 5), ReLU(), Dense(5, 4), LeakyReLU(0.1), Dense(4, 3)], SoftmaxCrossEntropy()),
    ([Dense(6, 5), Tanh(), Dropout(0.5), Dense(5, 3)], SoftmaxCrossEntropy(label_smoothing=0.1)),
    ([Dense(6, 5, init="xavier"), Sigmoid(), Dense(5, 3), Sigmoid()], MeanSquaredError()),
    ([Dense(6, 5), Tanh(), Dense(5, 3), Softmax()], MeanSquaredError()),
], ids=["relu-leaky-ce", "tanh-dropout-smoothed-ce", "sigmoid-mse", "softmax-mse"])
def test_whole_model_gradients_match_finite_differences(layers, loss, rng):
    model = Sequential(layers, input_shape=(6,), rng=rng)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.fixed_mask = (rng.random((4, 5)) >= layer.rate) / (1 - layer.rate)
    # non-zero biases keep ReLU/LeakyReLU inputs away from their kink at 0 (with zero biases, a row
    # whose ReLU outputs are all 0 would feed exactly 0 into the LeakyReLU)
    for layer in model.layers:
        if isinstance(layer, Dense):
            layer.params["bias"][...] = 0.1
    errors = check_model(model, loss, rng.standard_normal((4, 6)), np.array([0, 2, 1, 2]))
    assert max(errors.values()) < 1e-6, errors
