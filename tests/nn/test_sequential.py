"""Sequential (the reference): configs and state round trips, predictions, the backward protocol, gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import (
    SGD,
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
)
from digitnet.nn.gelu import GELU
from digitnet.nn.gradcheck import check_model, numeric_gradient, relative_error


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


# -- construction -------------------------------------------------------------------------------
def test_layers_that_do_not_fit_together_raise_config_error():
    with pytest.raises(ConfigError, match="layer 2"):
        Sequential([Dense(784, 10), ReLU(), Dense(20, 5)])
    with pytest.raises(ConfigError, match="expects 784 inputs"):
        Sequential([Dense(784, 10)], input_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="at least one layer"):
        Sequential([])


def test_layers_that_draw_random_numbers_share_the_model_generator():
    rng = np.random.default_rng(0)
    dropout = Dropout(0.5, rng=np.random.default_rng(99))
    dense = Dense(4, 4, rng=np.random.default_rng(1))
    model = Sequential([dense, dropout], input_shape=(4,), rng=rng)
    assert model.rng is rng and dropout.rng is rng
    assert not hasattr(dense, "rng")                                  # weights were drawn at construction


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
    {"layers": [{"type": "ReLU"}], "input_shape": [True]}, {"layers": [{"type": "GELU", "slope": 0.1}]},
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


def test_parameters_after_backward_hold_the_new_gradients(rng):
    """Reference backward rebinds ``grads``: pairs taken before a backward hold the old arrays, so an
    optimizer must be given ``model.parameters()`` after each backward."""
    model = Sequential.from_spec("6-4-2", rng=rng)
    stale = model.parameters()
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(rng.random((3, 6), dtype=np.float32), training=True), np.array([0, 1, 1]))
    model.backward(loss.backward())
    fresh = model.parameters()
    for (p_old, g_old), (p_new, g_new), (_, _, grad) in zip(stale, fresh, model.named_parameters(), strict=True):
        assert p_old is p_new                                            # parameters stay the same arrays
        assert g_new is grad and g_old is not g_new
        np.testing.assert_array_equal(g_old, 0)
    assert any(np.any(g != 0) for _, g in fresh)


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


def test_inference_batch_size_depends_on_the_input():
    assert Sequential.from_spec("12-5").inference_batch_size == 2048
    assert Sequential([Flatten(), Dense(16, 2)], input_shape=(1, 4, 4)).inference_batch_size == 256


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


def test_training_outputs_are_not_overwritten_by_the_next_forward(rng):
    model = Sequential.from_spec("12-8-5", rng=rng)
    x = rng.random((2, 12), dtype=np.float32)
    first = model.forward(x, training=True)
    kept = first.copy()
    model.forward(2 * x, training=True)
    np.testing.assert_array_equal(first, kept)


def test_model_call_is_forward_and_repr_lists_the_layers(rng):
    model = Sequential.from_spec("4-3-2", rng=rng)
    x = rng.random((2, 4), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model.forward(x))
    assert repr(model).startswith("Sequential(Dense(in_features=4, out_features=3, init='he'), ReLU()")


def test_release_buffers_clears_every_layer(rng):
    model = Sequential.from_spec("4-3-2", dropout=0.5, rng=rng)
    model.forward(rng.random((2, 4), dtype=np.float32), training=True)
    assert model.layers[0].x is not None and model.layers[1].y is not None and model.layers[2].mask is not None
    model.release_buffers()
    assert model.layers[0].x is None and model.layers[1].y is None and model.layers[2].mask is None


# -- backward -----------------------------------------------------------------------------------
def test_backward_returns_the_gradient_with_respect_to_the_inputs(rng):
    """The reference model back-propagates into its first layer too: dL/d(inputs) comes back."""
    model = Sequential([Flatten(), Dense(16, 4, rng=rng), ReLU(), Dense(4, 3, rng=rng)], input_shape=(4, 4))
    for layer in model.layers:
        for store in (layer.params, layer.grads):
            for key in store:
                store[key] = store[key].astype(np.float64)
        if layer.params:
            layer.params["bias"][...] = 0.1
    x = rng.random((5, 4, 4))
    labels = np.array([0, 1, 2, 0, 1])
    loss = SoftmaxCrossEntropy()

    def f() -> float:
        return loss.forward(model.forward(x, training=True), labels)

    f()
    grad_x = model.backward(loss.backward())
    assert grad_x.shape == x.shape
    assert relative_error(grad_x, numeric_gradient(f, x)) < 1e-6
    assert np.any(model.layers[1].grads["weights"] != 0)


def test_backward_leaves_the_loss_gradient_alone(rng):
    model = Sequential.from_spec("6-5-3", dropout=0.2, rng=rng)
    out = model.forward(rng.random((4, 6), dtype=np.float32), training=True)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    before = grad.copy()
    model.backward(grad)
    np.testing.assert_array_equal(grad, before)


def test_training_step_is_float32_throughout(rng):
    model = Sequential.from_spec("12-8-5", dropout=0.2, rng=rng)
    loss = SoftmaxCrossEntropy()
    out = model.forward(rng.random((4, 12), dtype=np.float32), training=True)
    loss.forward(out, np.array([0, 1, 2, 3]))
    grad_x = model.backward(loss.backward())
    assert out.dtype == np.float32 and grad_x.dtype == np.float32
    assert all(p.dtype == np.float32 and g.dtype == np.float32 for _, p, g in model.named_parameters())


@pytest.mark.parametrize(("layers", "loss"), [
    ([Dense(6, 5), ReLU(), Dense(5, 4), LeakyReLU(0.1), Dense(4, 3)], SoftmaxCrossEntropy()),
    ([Dense(6, 5), Tanh(), Dropout(0.5), Dense(5, 3)], SoftmaxCrossEntropy(label_smoothing=0.1)),
    ([Dense(6, 5, init="xavier"), Sigmoid(), Dense(5, 3), Sigmoid()], MeanSquaredError()),
    ([Dense(6, 5), Tanh(), Dense(5, 3), Softmax()], MeanSquaredError()),
    ([Dense(6, 5), GELU(), Dense(5, 3)], SoftmaxCrossEntropy(reduction="sum")),
    ([Dense(6, 5), ReLU(), Dense(5, 3), Sigmoid()], MeanSquaredError(reduction="sum")),
], ids=["relu-leaky-ce", "tanh-dropout-smoothed-ce", "sigmoid-mse", "softmax-mse", "gelu-summed-ce",
        "relu-summed-mse"])
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


def test_an_mlp_learns_a_separable_task(rng):
    x = rng.standard_normal((64, 4)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = Sequential.from_spec("4-8-2", rng=rng)
    loss, optimizer = SoftmaxCrossEntropy(), SGD(0.5, momentum=0.9)
    first = loss.forward(model.forward(x, training=True), labels)
    for _ in range(50):
        loss.forward(model.forward(x, training=True), labels)
        model.backward(loss.backward())
        optimizer.step(model.parameters())
    assert loss.forward(model.forward(x), labels) < 0.2 * first
    assert np.mean(model.predict(x) == labels) > 0.95
