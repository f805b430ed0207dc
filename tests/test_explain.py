import json

import numpy as np
import pytest

from digitnet.analysis import batch_gradients
from digitnet.config import TrainConfig, build_loss, build_model, build_optimizer, seed_generators
from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError, DataError
from digitnet.explain import PREDICTING_RULES, copy_model, explain_image, substitute, symbols
from digitnet.kernels import speed_up
from digitnet.nn import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
)
from digitnet.nn.gradcheck import numeric_gradient, relative_error
from digitnet.nn.registry import entry, entry_of


def stroke_image() -> np.ndarray:
    """A fixed 28x28 uint8 'digit': a thick diagonal stroke and a bar, white on black."""
    image = np.zeros((28, 28), dtype=np.uint8)
    for t in range(20):
        image[4 + t, 8 + t // 2:11 + t // 2] = 230
    image[6:9, 6:22] = 255
    return image


@pytest.fixture
def mlp():
    return Sequential.from_spec("784-16-10", rng=np.random.default_rng(3))


def float64_copy(model: Sequential) -> Sequential:
    """The same network with float64 parameters (for finite differences without float32 noise)."""
    copy = Sequential.from_config(model.config())
    copy.load_state_dict(model.state_dict())
    for layer in copy.layers:
        for key in layer.params:
            layer.params[key] = layer.params[key].astype(np.float64)
            layer.grads[key] = np.zeros_like(layer.params[key])
    return copy


def loss_of(model: Sequential, inputs: np.ndarray, label: int) -> float:
    return SoftmaxCrossEntropy().forward(model.forward(inputs, training=False), np.array([label]))


def test_mlp_forward_shapes_symbols_and_formulas(mlp):
    e = explain_image(mlp, stroke_image(), 4)
    assert [s.symbol for s in e.forward] == ["z1", "a1", "z2"]
    assert [s.formula for s in e.forward] == ["z1 = x @ weights + bias", "a1 = max(z1, 0)", "z2 = a1 @ weights + bias"]
    assert [(s.input_shape, s.output_shape) for s in e.forward] == [((1, 784), (1, 16)), ((1, 16), (1, 16)),
                                                                    ((1, 16), (1, 10))]
    assert {k: v.shape for k, v in e.forward[0].params.items()} == {"weights": (784, 16), "bias": (16,)}
    assert e.inputs.shape == (1, 784) and e.inputs.max() == pytest.approx(1.0)
    # each step's output is that layer's real output
    expected = mlp.forward_all(images_to_inputs(stroke_image()[None], (784,)))
    for step, out in zip(e.forward, expected[1:], strict=True):
        np.testing.assert_allclose(step.output, out, rtol=1e-6, atol=1e-7)


def test_probabilities_sum_to_one_and_equal_predict_proba(mlp):
    e = explain_image(mlp, stroke_image(), 4)
    assert e.probabilities.shape == (10,)
    assert float(e.probabilities.sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(e.probabilities, mlp.predict_proba(e.inputs)[0])
    assert e.predicted == int(mlp.predict(e.inputs)[0])


def test_loss_is_minus_log_p_of_the_label_and_its_gradient_is_p_minus_onehot(mlp):
    e = explain_image(mlp, stroke_image(), 4)
    assert e.loss.value == pytest.approx(-np.log(e.probabilities[4]), rel=1e-5)
    onehot = np.eye(10, dtype=np.float32)[4]
    np.testing.assert_allclose(e.loss.grad[0], e.probabilities - onehot, atol=1e-6)
    assert e.loss.grad_formula == "grad_z2 = (softmax(z2) - q) / B"      # the registry's dL/dz, z named z2
    assert e.loss.formula == substitute(entry("loss", "cross_entropy").formula, {"z": "z2", "y": "label"})
    assert e.loss.settings == {"label_smoothing": 0.0, "reduction": "mean"}


def test_backward_gradients_are_the_real_ones(mlp):
    image = stroke_image()
    e = explain_image(mlp, image, 4)
    assert [s.name for s in e.backward] == ["dense_1", "relu_0", "dense_0"]
    assert e.backward[0].formulas == ["grad_weights = a1.T @ grad_z2", "grad_bias = sum_b grad_z2",
                                      "grad_a1 = grad_z2 @ weights.T"]
    assert e.backward[1].formulas == ["grad_z1 = grad_a1 * (a1 > 0)"]
    reference = batch_gradients(mlp, SoftmaxCrossEntropy(), image[None], np.array([4]))
    for step in e.backward:
        for key, grad in step.grads.items():
            np.testing.assert_allclose(grad, reference[f"layers.{step.index}.{key}"], rtol=1e-5, atol=1e-8)
    assert {k: v.shape for k, v in e.backward[2].grads.items()} == {"weights": (784, 16), "bias": (16,)}

    # grad_x (the first layer's input gradient) against central differences in float64
    grad_x = e.backward[-1].grad_in
    assert grad_x.shape == (1, 784)
    model64 = float64_copy(mlp)
    x = e.inputs.astype(np.float64)
    numeric = numeric_gradient(lambda: loss_of(model64, x, 4), x, h=1e-6)
    assert relative_error(grad_x, numeric) < 1e-4


def test_relu_statistics_count_the_units_that_are_off(mlp):
    e = explain_image(mlp, stroke_image(), 4)
    relu = e.forward[1]
    off = int(np.count_nonzero(relu.output == 0))
    assert 0 < off < 16
    assert relu.stats["off"] == off and relu.stats["size"] == 16
    # no gradient flows back through an off unit
    grad_z1 = e.backward[1].grad_in[0]
    assert np.all(grad_z1[relu.output[0] == 0] == 0)


def test_one_sgd_step_lowers_the_loss_on_a_copy(mlp):
    before = {k: v.copy() for k, v in mlp.state_dict().items()}
    e = explain_image(mlp, stroke_image(), 4, lr=0.01)
    for key, value in mlp.state_dict().items():            # the model passed in is untouched
        np.testing.assert_array_equal(value, before[key])
    u = e.update
    assert u.lr == 0.01 and u.formula == entry("optimizer", "sgd").formula
    assert u.settings == {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}  # param -= lr * grad
    grads = {f"layers.{s.index}.{k}": g for s in e.backward for k, g in s.grads.items()}
    assert set(u.update_norms) == set(grads)
    for name, grad in grads.items():
        assert u.update_norms[name] == pytest.approx(0.01 * np.linalg.norm(grad.astype(np.float64)), rel=1e-6)
    # the step, done by hand, gives the loss the record reports
    stepped = Sequential.from_config(mlp.config())
    stepped.load_state_dict({name: before[name] - 0.01 * grads[name] for name in before})
    assert u.loss_after == pytest.approx(loss_of(stepped, e.inputs, 4), rel=1e-5)
    assert u.loss_before == pytest.approx(e.loss.value)
    assert u.loss_after < u.loss_before
    assert u.p_true_after > u.p_true_before == pytest.approx(float(e.probabilities[4]))


def test_without_a_label_the_prediction_is_the_target(mlp):
    e = explain_image(mlp, stroke_image())
    assert not e.label_given and e.label == e.predicted


def test_cnn_with_batchnorm_pooling_and_dropout():
    rng = np.random.default_rng(5)
    model = Sequential([Conv2D(1, 3, 3, rng=rng), BatchNorm(3), ReLU(), MaxPool2D(2), Flatten(), Dropout(0.5),
                        Dense(3 * 13 * 13, 10, rng=rng)], input_shape=(1, 28, 28))
    # running statistics that are not the identity, so BatchNorm really transforms
    model.layers[1].buffers["running_mean"][:] = [0.1, -0.2, 0.05]
    model.layers[1].buffers["running_var"][:] = [0.5, 2.0, 1.5]
    model.layers[1].params["gamma"][:] = [1.5, 0.7, 1.1]
    e = explain_image(model, stroke_image(), 2)
    assert [s.output_shape for s in e.forward] == [(1, 3, 26, 26), (1, 3, 26, 26), (1, 3, 26, 26), (1, 3, 13, 13),
                                                   (1, 507), (1, 507), (1, 10)]
    assert symbols(model) == ["z1", "z2", "a2", "a2_2", "a2_3", "a2_4", "z3"]
    assert e.forward[3].formula == "a2_2[b,c,h,w] = max_{i,j} a2[b,c,h*s+i,w*s+j]"
    # the two layers that predict with another function than they train with have explain's own rules
    assert e.forward[1].formula == ("z2 = gamma * z1_hat + beta,  z1_hat = (z1 - running_mean) / "
                                    "sqrt(running_var + eps)")
    assert e.forward[5].formula == "a2_4 = a2_3   (dropout is off when predicting)"
    assert e.backward[-2].formulas == ["grad_gamma = sum(grad_z2 * z1_hat)", "grad_beta = sum(grad_z2)",
                                       "grad_z1 = grad_z2 * gamma / sqrt(running_var + eps)"]
    np.testing.assert_allclose(e.probabilities, model.predict_proba(e.inputs)[0], rtol=1e-6, atol=1e-8)
    assert float(e.probabilities.sum()) == pytest.approx(1.0, abs=1e-6)

    grads = {f"layers.{s.index}.{k}": g for s in e.backward for k, g in s.grads.items()}
    assert grads["layers.0.weights"].shape == (3, 1, 3, 3) and grads["layers.6.weights"].shape == (507, 10)
    assert e.backward[-1].grad_in.shape == (1, 1, 28, 28)
    # every parameter's gradient (inference-mode BatchNorm included) against central differences in float64
    model64 = float64_copy(model)
    x = e.inputs.astype(np.float64)
    for name in ("layers.0.weights", "layers.1.gamma", "layers.1.beta", "layers.6.bias"):
        index, key = name.split(".")[1:]
        array = model64.layers[int(index)].params[key]
        numeric = numeric_gradient(lambda: loss_of(model64, x, 2), array, h=1e-6)
        assert relative_error(grads[name], numeric) < 1e-4, name
    # max pooling routes each window's gradient to one input
    pool_step = next(s for s in e.backward if s.kind == "MaxPool2D")
    assert np.count_nonzero(pool_step.grad_in) <= np.count_nonzero(pool_step.grad_out)


def test_sigmoid_network_with_mse():
    rng = np.random.default_rng(1)
    model = Sequential([Dense(784, 12, init="xavier", rng=rng), Sigmoid(), Dense(12, 10, init="xavier", rng=rng),
                        Sigmoid()])
    e = explain_image(model, stroke_image(), 7, training={"loss": "mse"})
    assert e.output_kind == "sigmoid" and e.loss.name == "mse"
    a = e.outputs[0].astype(np.float64)
    target = np.eye(10)[7]
    assert e.loss.value == pytest.approx(0.5 * np.sum((a - target) ** 2), rel=1e-5)
    np.testing.assert_allclose(e.probabilities, model.predict_proba(e.inputs)[0], rtol=1e-6)
    assert e.loss.formula == "L = (1/2B) sum_b sum_k (a2[b,k] - onehot(label)[b,k])**2"
    assert e.loss.grad_formula == "grad_a2 = (a2 - onehot(label)) / B"
    assert e.backward[0].formulas == ["grad_z2 = grad_a2 * a2 * (1 - a2)"]
    assert "saturated" in e.forward[1].stats


def test_bad_requests_are_user_errors(mlp):
    with pytest.raises(DataError, match="784"):
        explain_image(mlp, np.zeros((20, 20), dtype=np.uint8), 1)
    with pytest.raises(ConfigError, match="label 12"):
        explain_image(mlp, stroke_image(), 12)
    with pytest.raises(ConfigError, match="learning rate"):
        explain_image(mlp, stroke_image(), 1, lr=0.0)


def test_summary_is_json_ready(mlp):
    summary = explain_image(mlp, stroke_image(), 4).to_dict(values=3)
    text = json.dumps(summary)
    assert json.loads(text)["forward"][0]["output_shape"] == [1, 16]
    assert len(summary["forward"][0]["values"]) == 3
    assert summary["backward"][-1]["grads"]["weights"]["shape"] == [784, 16]
    assert sum(summary["probabilities"]) == pytest.approx(1.0, abs=1e-6)


def test_substitute_renames_variables_and_their_gradients_only():
    names = {"x": "a1", "y": "z2"}
    assert substitute("grad_x = grad_y * (y > 0)", names) == "grad_a1 = grad_z2 * (z2 > 0)"
    assert substitute("y_k = exp(x_k) / sum_j exp(x_j)", names) == "z2_k = exp(a1_k) / sum_j exp(a1_j)"
    assert substitute("x_hat = (x - mean) * max(x_pad, 0)", names) == "a1_hat = (a1 - mean) * max(a1_pad, 0)"
    assert substitute("dL/dz = softmax(z) - onehot(y)", {"z": "z3", "y": "label"}) == \
        "grad_z3 = softmax(z3) - onehot(label)"
    assert substitute("exp(xy) + max(x2, y.T)", names) == "exp(xy) + max(x2, z2.T)"


def test_every_formula_is_the_registrys_with_the_steps_symbols(mlp):
    e = explain_image(mlp, stroke_image(), 4)
    for step, layer in zip(e.forward, mlp.layers, strict=True):
        rule = entry_of(layer)
        names = {"x": step.input_symbol, "y": step.symbol}
        assert step.formula == substitute(rule.formula, names)
        backward = next(b for b in e.backward if b.index == step.index)
        assert backward.formulas == [substitute(part.strip(), names) for part in rule.gradient.split(";")]
    assert e.output_formula == "p = softmax(z2)"
    assert set(PREDICTING_RULES) == {"BatchNorm", "Dropout"}   # the only rules explain writes itself


def test_a_new_activation_and_optimizer_need_no_explain_code():
    """GELU and RMSprop were added to digitnet.nn only: a GELU network trained with RMSprop is
    explained with GELU's registered formulas, by the reference layers, whatever the model computes with."""
    config = TrainConfig().replace(arch="784-12-10", activation="gelu", optimizer="rmsprop", lr=0.003,
                                   loss_reduction="sum")
    rngs = seed_generators(0)
    model, loss_fn, optimizer = speed_up(build_model(config, rngs["init"], rngs["dropout"]), build_loss(config),
                                         build_optimizer(config))
    images = np.stack([np.roll(stroke_image(), shift, axis=1) for shift in range(-3, 4)])
    labels = np.arange(7) % 10
    x = images_to_inputs(images, (784,))
    for _ in range(5):
        loss_fn.forward(model.forward(x, training=True), labels)
        model.backward(loss_fn.backward())
        optimizer.step(model.parameters())
    assert optimizer.name == "rmsprop"

    assert all(type(layer).__module__.startswith("digitnet.nn.") for layer in copy_model(model).layers)
    e = explain_image(model, stroke_image(), 3, training=config.to_dict())
    assert [s.kind for s in e.forward] == ["Dense", "GELU", "Dense"]
    gelu = entry("activation", "gelu")
    assert e.forward[1].formula == substitute(gelu.formula, {"x": "z1", "y": "a1"}) == \
        "a1 = 0.5 * z1 * (1 + tanh(u)),  u = sqrt(2/pi) * (z1 + 0.044715 * z1**3)"
    assert e.backward[1].formulas == [substitute(gelu.gradient, {"x": "z1", "y": "a1"})]
    assert e.loss.settings["reduction"] == "sum"               # the loss the model was trained with
    assert e.update.formula == entry("optimizer", "sgd").formula     # the explained step is plain SGD
    reference = batch_gradients(copy_model(model), build_loss(config), stroke_image()[None], np.array([3]))
    for step in e.backward:
        for key, grad in step.grads.items():
            np.testing.assert_allclose(grad, reference[f"layers.{step.index}.{key}"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(e.probabilities, model.predict_proba(e.inputs)[0], rtol=1e-5, atol=1e-7)
