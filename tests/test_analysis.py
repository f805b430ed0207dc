import numpy as np
import pytest

from digitnet.analysis import (
    batch_gradients,
    confident_mistakes,
    evaluation_metrics,
    first_weight_name,
    forward_trace,
    hidden_output_index,
    hidden_representations,
    layer_label,
    layer_table,
    loss_for,
    pca_2d,
    pick_weight,
    predict,
    weight_change,
)
from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError
from digitnet.nn import Sequential, softmax
from digitnet.nn.losses import MeanSquaredError, SoftmaxCrossEntropy
from digitnet.training import evaluate


@pytest.fixture(scope="module")
def trained(mnist_train):
    """A 784-32-16-10 MLP trained two epochs on 5,000 real MNIST images."""
    from digitnet.nn import make_loss, make_optimizer
    from digitnet.training import fit

    model = Sequential.from_spec("784-32-16-10", rng=np.random.default_rng(0))
    fit(model, make_loss("ce"), make_optimizer("adam", 0.003), mnist_train.head(5000), epochs=2, batch_size=64,
        rng=np.random.default_rng(1))
    return model


def test_pca_is_centred_two_dimensional_and_finds_the_main_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    features = 10 * rng.standard_normal((500, 1)) * direction + 0.1 * rng.standard_normal((500, 3)) + 7
    points, explained = pca_2d(features)
    assert points.shape == (500, 2)
    np.testing.assert_allclose(points.mean(axis=0), 0, atol=1e-9)
    # the first component is the projection on the main direction (up to sign)
    projection = (features - features.mean(axis=0)) @ direction
    assert abs(np.corrcoef(points[:, 0], projection)[0, 1]) > 0.9999
    # explained variance ratios equal the top eigenvalues of the covariance over their sum
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(features.T)))[::-1]
    np.testing.assert_allclose(explained, eigenvalues[:2] / eigenvalues.sum(), rtol=1e-9)
    np.testing.assert_allclose(points.var(axis=0, ddof=1), eigenvalues[:2], rtol=1e-9)


def test_pca_refuses_too_few_samples():
    with pytest.raises(ConfigError):
        pca_2d(np.zeros((1, 5)))


def test_predictions_match_model_predict_and_metrics_match_evaluate(trained, mnist_test):
    data = mnist_test.head(2000)
    p = predict(trained, data.images, data.labels)
    np.testing.assert_array_equal(p.predicted, trained.predict(images_to_inputs(data.images, (784,))))
    np.testing.assert_allclose(p.probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(p.confidence, p.probs.max(axis=1))
    metrics = evaluation_metrics(p, data.classes)
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == 2000
    loss, accuracy = evaluate(trained, SoftmaxCrossEntropy(), data)
    assert np.trace(confusion) == round(accuracy * 2000)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    assert accuracy > 0.85  # two epochs on 5,000 real images


def test_confident_mistakes_are_the_surest_wrong_answers(trained, mnist_test):
    data = mnist_test.head(2000)
    p = predict(trained, data.images, data.labels)
    picked = confident_mistakes(p, 10)
    assert len(picked) == 10 and np.all(p.predicted[picked] != data.labels[picked])
    assert np.all(np.diff(p.confidence[picked]) <= 0)
    others = np.setdiff1d(np.flatnonzero(~p.correct), picked)
    assert p.confidence[others].max() <= p.confidence[picked].min()
    assert len(confident_mistakes(p, 10_000)) == np.count_nonzero(~p.correct)


def test_hidden_representations_are_the_last_hidden_activations(trained, mnist_test):
    images = mnist_test.images[:50]
    assert hidden_output_index(trained) == 4  # input of layer 4, the last Dense
    hidden = hidden_representations(trained, images, batch_size=16)
    assert hidden.shape == (50, 16)
    np.testing.assert_allclose(hidden, trained.forward_all(images_to_inputs(images, (784,)))[4], rtol=1e-5,
                               atol=1e-5)
    assert hidden.min() >= 0  # after ReLU
    with pytest.raises(ConfigError, match="no hidden layer"):
        hidden_output_index(Sequential.from_spec("784-10"))


def test_forward_trace_labels_every_stage(trained, mnist_test):
    image = mnist_test.images[0]
    stages = forward_trace(trained, image)
    assert [s.kind for s in stages] == ["input", "pre-activation", "activation", "pre-activation", "activation",
                                        "output"]
    assert stages[1].name == "layer 0: Dense 784->32"
    np.testing.assert_array_equal(stages[0].values, image)
    logits = trained.forward(images_to_inputs(image[None], (784,)))[0]
    np.testing.assert_allclose(stages[-1].values, logits, rtol=1e-6)
    np.testing.assert_allclose(stages[2].values, np.maximum(stages[1].values, 0))


def test_batch_gradients_match_the_formula_for_the_output_layer(trained, mnist_test):
    images, labels = mnist_test.images[:32], mnist_test.labels[:32]
    before = {k: v.copy() for k, v in trained.state_dict().items()}
    grads = batch_gradients(trained, loss_for(trained), images, labels)
    assert set(grads) == {f"layers.{i}.{k}" for i in (0, 2, 4) for k in ("weights", "bias")}
    outputs = trained.forward_all(images_to_inputs(images, (784,)))
    hidden, logits = outputs[4].astype(np.float64), outputs[5].astype(np.float64)
    delta = softmax(logits) - np.eye(10)[labels]
    np.testing.assert_allclose(grads["layers.4.weights"], hidden.T @ delta / 32, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads["layers.4.bias"], delta.mean(axis=0), rtol=1e-4, atol=1e-7)
    for name, value in trained.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # weights untouched


def test_loss_for_follows_the_config_or_the_output_kind():
    logits_model = Sequential.from_spec("4-3")
    assert isinstance(loss_for(logits_model), SoftmaxCrossEntropy)
    assert isinstance(loss_for(logits_model, {"loss": "mse"}), MeanSquaredError)
    assert isinstance(loss_for(Sequential.from_spec("4-3", output_activation="sigmoid")), MeanSquaredError)


def test_weight_selection_and_change(trained):
    state = trained.state_dict()
    assert first_weight_name(state) == "layers.0.weights" == pick_weight(state, None)
    assert pick_weight(state, 4) == "layers.4.weights"
    with pytest.raises(ConfigError, match="layers with weights: 0, 2, 4"):
        pick_weight(state, 1)
    moved = {k: v + 0.5 for k, v in state.items()}
    change = weight_change(state, moved, "layers.2.weights")
    np.testing.assert_allclose(change["diff"], 0.5, rtol=1e-6)
    expected = np.linalg.norm(np.full((32, 16), 0.5)) / np.linalg.norm(state["layers.2.weights"])
    assert change["relative_change"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError):
        weight_change(state, {"layers.2.weights": np.zeros((2, 2))}, "layers.2.weights")


def test_layer_table_and_labels(trained):
    table = layer_table(trained)
    assert [row["type"] for row in table] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    assert sum(row["params"] for row in table) == trained.num_params() == 784 * 32 + 32 + 32 * 16 + 16 + 170
    assert table[2]["output_shape"] == (16,)
    assert layer_label(trained, 4) == "Dense 16->10" and layer_label(trained, 1) == "ReLU"
